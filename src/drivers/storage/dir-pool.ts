// `dir` pools: qcow2 volumes in a directory of a compute host (`<pool.path>/<name>.qcow2`, imported ISOs
// `<name>.iso`). The VMs of this host open them through a descriptor root passes to their QEMU (which runs as a
// per-VM uid), so the directory stays root's (0700) and its files root's (0600): no other user reads or swaps them.
// The nfs backend is this plus an export per pool (it extends DirPool through its protected hooks).
import { chmod, lstat, mkdir, readdir, rmdir } from 'node:fs/promises';
import type { Runner } from '../../exec/runner.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../shared/errors.js';
import {
  type ObservedPool,
  POOL_FEATURES,
  type PoolConfig,
  type PoolFeatures,
  type PoolType,
  type VolumeConfig,
} from '../../shared/storage.js';
import type { SecretValues } from '../hypervisor/types.js';
import type { OpContext } from '../network/types.js';
import { PoolStateStore } from './pool-state.js';
import { poolUsage } from './qcow2-listing.js';
import { Qcow2Volumes } from './qcow2-volumes.js';
import type { PoolBackend } from './types.js';

/** What a DirPool needs (a subset of the registry's PoolBackendOptions). */
export interface DirPoolOptions {
  runner: Runner;
  stateDir: string;
}

/** What a pool backend built on DirPool changes (the nfs backend: its type, its directory's mode). */
export interface DirPoolKind {
  type: PoolType;
  /** Mode of the pool directory (default 0o700). */
  dirMode?: number;
}

/**
 * The `dir` pool backend, and the base of other backends whose pools are qcow2 files in a directory of their host
 * (nfs: the same plus an export; it overrides the hooks below).
 */
export class DirPool implements PoolBackend {
  readonly type: PoolType;
  readonly features: PoolFeatures;
  protected readonly runner: Runner;
  /** The pool records (shared with every backend of this agent). */
  protected readonly store: PoolStateStore;
  private readonly dirMode: number;

  constructor(opts: DirPoolOptions, kind: DirPoolKind = { type: 'dir' }) {
    this.runner = opts.runner;
    this.store = new PoolStateStore(opts.stateDir);
    this.type = kind.type;
    this.features = POOL_FEATURES[kind.type];
    this.dirMode = kind.dirMode ?? 0o700;
  }

  /** The volumes of `pool`; refuses a pool of another type. */
  protected volumes(pool: PoolConfig): Qcow2Volumes {
    if (pool.type !== this.type)
      throw new InvalidRequestError(
        `pool ${pool.name} is of type ${pool.type}, not ${this.type}`,
        `pool/${pool.name}`,
      );
    return new Qcow2Volumes(this.runner, pool);
  }

  /** Runs once the pool's directory is in place, before its record is written (nfs: the export). */
  protected async afterEnsure(_pool: PoolConfig, _ctx?: OpContext): Promise<void> {}

  /** Runs once an empty pool's directory is gone, before its record is removed (nfs: the export). */
  protected async beforeRemove(_pool: PoolConfig, _ctx?: OpContext): Promise<void> {}

  /** Problems of a pool whose directory is there, beyond its volumes' (nfs: the export missing). */
  protected async poolProblems(_pool: PoolConfig): Promise<string[]> {
    return [];
  }

  /** The pool's directory as it is: absent, or a root-owned directory (never a link, which could lead anywhere). */
  private async directory(pool: PoolConfig): Promise<'absent' | 'ok'> {
    const st = await lstat(pool.path).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    if (!st) return 'absent';
    if (!st.isDirectory())
      throw new InvalidRequestError(
        `pool ${pool.name}: ${pool.path} is not a directory${st.isSymbolicLink() ? ' (a symbolic link)' : ''}; give the pool a path of its own`,
        `pool/${pool.name}`,
      );
    const uid = process.getuid?.() ?? 0;
    if (st.uid !== uid)
      throw new InvalidRequestError(
        `pool ${pool.name}: ${pool.path} belongs to uid ${st.uid}, not to the agent's user: its owner could swap the volumes in it`,
        `pool/${pool.name}`,
      );
    return 'ok';
  }

  /** A pool that volume operations may use: its directory exists. */
  private async realised(pool: PoolConfig): Promise<Qcow2Volumes> {
    const v = this.volumes(pool);
    if ((await this.directory(pool)) === 'absent') throw new NotFoundError('pool', pool.name);
    return v;
  }

  async ensurePool(pool: PoolConfig, configHash: string, ctx?: OpContext): Promise<void> {
    this.volumes(pool); // refuses a pool of another type
    ctx?.signal?.throwIfAborted();
    const old = await this.store.read(pool.name);
    if (old && old.config.path !== pool.path) {
      const left = await new Qcow2Volumes(this.runner, old.config).names();
      if (left.length)
        throw new ConflictError(
          `pool ${pool.name} holds volumes in ${old.config.path} (${left.slice(0, 5).join(', ')}${left.length > 5 ? ', ...' : ''}): move them to ${pool.path} or delete them before changing its path`,
          `pool/${pool.name}`,
        );
    }
    if ((await this.directory(pool)) === 'absent') {
      ctx?.progress?.(`creating pool ${pool.name} in ${pool.path}`);
      await mkdir(pool.path, { recursive: true, mode: this.dirMode });
    }
    await chmod(pool.path, this.dirMode);
    await this.afterEnsure(pool, ctx);
    await this.store.write({ config: pool, configHash });
  }

  async deletePool(pool: PoolConfig, ctx?: OpContext): Promise<void> {
    const v = this.volumes(pool);
    ctx?.signal?.throwIfAborted();
    if ((await this.directory(pool)) === 'ok') {
      const names = await v.names();
      if (names.length)
        throw new ConflictError(
          `pool ${pool.name} holds volumes (${names.slice(0, 10).join(', ')}${names.length > 10 ? ', ...' : ''}): delete them first`,
          `pool/${pool.name}`,
        );
      ctx?.progress?.(`deleting pool ${pool.name} (${pool.path})`);
      await v.removeLeftovers();
      await rmdir(pool.path).catch(async (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return;
        if (e.code !== 'ENOTEMPTY') throw e;
        const other = (await readdir(pool.path)).slice(0, 5);
        throw new ConflictError(
          `pool ${pool.name}: ${pool.path} holds files that are not volumes (${other.join(', ')}): remove them first`,
          `pool/${pool.name}`,
        );
      });
    }
    await this.beforeRemove(pool, ctx);
    await this.store.remove(pool.name);
  }

  async listPools(): Promise<ObservedPool[]> {
    const out: ObservedPool[] = [];
    for (const { config, configHash } of await this.store.readAll(this.type)) {
      const base = { name: config.name, type: this.type, configHash, config };
      let state: 'absent' | 'ok';
      try {
        state = await this.directory(config);
      } catch (e) {
        out.push({
          ...base,
          problems: [(e as Error).message],
          capacityMiB: 0,
          usedMiB: 0,
          freeMiB: 0,
          volumes: [],
        });
        continue;
      }
      if (state === 'absent') {
        out.push({
          ...base,
          problems: [`directory ${config.path} is missing`],
          capacityMiB: 0,
          usedMiB: 0,
          freeMiB: 0,
          volumes: [],
        });
        continue;
      }
      const { volumes, problems } = await this.volumes(config).list();
      const own = await this.poolProblems(config);
      out.push({ ...base, problems: [...own, ...problems], ...(await poolUsage(config.path)), volumes });
    }
    return out;
  }

  async createVolume(
    pool: PoolConfig,
    volume: VolumeConfig,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void> {
    await (await this.realised(pool)).ensure(volume, ctx, secrets);
  }

  async resizeVolume(
    pool: PoolConfig,
    name: string,
    sizeMiB: number,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void> {
    await (await this.realised(pool)).resize(name, sizeMiB, ctx, secrets);
  }

  async deleteVolume(pool: PoolConfig, name: string, ctx?: OpContext): Promise<void> {
    const v = this.volumes(pool);
    v.fileOf(name);
    if ((await this.directory(pool)) === 'absent') return;
    await v.delete(name, ctx);
  }

  async importVolume(pool: PoolConfig, name: string, sourcePath: string, ctx?: OpContext): Promise<void> {
    await (await this.realised(pool)).importFile(name, sourcePath, ctx);
  }

  async createSnapshot(
    pool: PoolConfig,
    volume: string,
    snapshot: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void> {
    await (await this.realised(pool)).snapshot('create', volume, snapshot, ctx, secrets);
  }

  async rollbackSnapshot(
    pool: PoolConfig,
    volume: string,
    snapshot: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void> {
    await (await this.realised(pool)).snapshot('rollback', volume, snapshot, ctx, secrets);
  }

  async deleteSnapshot(
    pool: PoolConfig,
    volume: string,
    snapshot: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void> {
    await (await this.realised(pool)).snapshot('delete', volume, snapshot, ctx, secrets);
  }
}
