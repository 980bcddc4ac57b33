// `iscsi` pool backend, on a storage host: each volume a raw file `<pool.path>/<volume>.img` served by tgtd as LUN 1
// of its own target, behind the pool's CHAP account and client ACL (iscsi-targets.ts). tgtd is driven over its
// control socket (tgt-client.ts), so the CHAP password never reaches an argv; it is never written anywhere either:
// tgtd keeps it in memory, and a restarted tgtd gets it back from the next `ensurePool`, which the plan schedules
// because `listPools` reports the pool's problems. Beside it: iscsi-volume-files.ts (the LUN files), iscsi-chap.ts
// (the CHAP account), iscsi-observe.ts (what listPools reports), iscsi-fence.ts (volume fencing).
import { mkdir, rm, rmdir, stat, truncate } from 'node:fs/promises';
import type { Runner } from '../../exec/runner.js';
import { ConflictError, InvalidRequestError, NotFoundError, UnsupportedError } from '../../shared/errors.js';
import { KeyedQueue } from '../../shared/queue.js';
import {
  ISCSI_VOLUME_LUN,
  iscsiTargetName,
  type ObservedPool,
  POOL_FEATURE_REASONS,
  POOL_FEATURES,
  type PoolConfig,
  type PoolFeatures,
  type VolumeConfig,
  type VolumeFence,
} from '../../shared/storage.js';
import type { SecretValues } from '../hypervisor/types.js';
import type { OpContext } from '../network/types.js';
import { checkImportSource } from './image-import.js';
import { chapPassword, deleteChapAccount, setChapAccount } from './iscsi-chap.js';
import {
  closeForeignSessions,
  type FenceOwner,
  FenceStateStore,
  fencedAcl,
  judgeFence,
  ownerAcl,
  samePeer,
} from './iscsi-fence.js';
import { type IscsiObserveHost, observeIscsiPool } from './iscsi-observe.js';
import { exposeTarget, refuseInUse, removeTarget, type WantedTarget, wantedTarget } from './iscsi-targets.js';
import {
  checkIscsiPool,
  checkSize,
  convertInto,
  createSparse,
  exists,
  MiB,
  volumeFile,
  volumeNames,
} from './iscsi-volume-files.js';
import { PoolStateStore } from './pool-state.js';
import { VOLUME_NAME } from './qcow2-volumes.js';
import { TgtClient } from './tgt-client.js';
import type { TgtTarget } from './tgt-show.js';
import type { PoolBackend } from './types.js';

/**
 * Changes to one tgtd run one at a time in this process (keyed by its socket): a new target takes the next free id
 * read just before, which two concurrent changes would both pick.
 */
const tgtdChanges = new KeyedQueue();
/** Options of the iscsi pool backend. */
export interface IscsiPoolOptions {
  runner: Runner;
  /** The agent's state directory (pool records in `<stateDir>/pools`). */
  stateDir: string;
  /** tgtd's control port when a pool does not name one (`pool.iscsi.tgtControlPort` wins). */
  tgtControlPort?: number;
  /** This host's name in IQNs. */
  storageHost: string;
  /** tgtd socket prefix (tests). */
  socketPrefix?: string;
}

function unsupported(feature: keyof PoolFeatures, pool: PoolConfig): never {
  throw new UnsupportedError(
    `pool ${pool.name}: ${POOL_FEATURE_REASONS.iscsi?.[feature] ?? `iscsi pools do not support ${feature}`}`,
    `pool/${pool.name}`,
  );
}

/** Raw LUN files behind tgtd targets with CHAP. */
export class IscsiPool implements PoolBackend {
  readonly type = 'iscsi' as const;
  readonly features: PoolFeatures = POOL_FEATURES.iscsi;
  private readonly records: PoolStateStore;
  private readonly fences: FenceStateStore;
  /** What the pool observer (iscsi-observe.ts) uses of this backend. */
  private readonly observeHost: IscsiObserveHost;

  constructor(private readonly opts: IscsiPoolOptions) {
    if (!VOLUME_NAME.test(opts.storageHost))
      throw new InvalidRequestError(
        `storage host name ${JSON.stringify(opts.storageHost)} cannot be in an IQN`,
      );
    this.records = new PoolStateStore(opts.stateDir);
    this.fences = new FenceStateStore(opts.stateDir);
    this.observeHost = {
      client: (pool) => this.client(pool),
      fences: this.fences,
      target: (pool, targets, volume) => this.target(pool, targets, volume),
      want: (pool, volume, fence) => this.want(pool, volume, fence),
    };
  }

  /** Runs `fn` after the other changes to the tgtd serving `pool`. */
  private serial<T>(pool: PoolConfig, fn: () => Promise<T>): Promise<T> {
    return tgtdChanges.run(this.client(pool).socketPath, fn);
  }

  ensurePool(pool: PoolConfig, configHash: string, ctx?: OpContext, secrets?: SecretValues): Promise<void> {
    return this.serial(pool, () => this.ensurePoolNow(pool, configHash, ctx, secrets));
  }
  deletePool(pool: PoolConfig, ctx?: OpContext): Promise<void> {
    return this.serial(pool, () => this.deletePoolNow(pool, ctx));
  }
  createVolume(pool: PoolConfig, volume: VolumeConfig, ctx?: OpContext): Promise<void> {
    return this.serial(pool, () => this.createVolumeNow(pool, volume, ctx));
  }
  resizeVolume(pool: PoolConfig, name: string, sizeMiB: number, ctx?: OpContext): Promise<void> {
    return this.serial(pool, () => this.resizeVolumeNow(pool, name, sizeMiB, ctx));
  }
  deleteVolume(pool: PoolConfig, name: string, ctx?: OpContext): Promise<void> {
    return this.serial(pool, () => this.deleteVolumeNow(pool, name, ctx));
  }
  importVolume(pool: PoolConfig, name: string, sourcePath: string, ctx?: OpContext): Promise<void> {
    return this.serial(pool, () => this.importVolumeNow(pool, name, sourcePath, ctx));
  }
  fenceVolume(pool: PoolConfig, volume: string, owner: FenceOwner, ctx?: OpContext): Promise<void> {
    return this.serial(pool, () => this.fenceVolumeNow(pool, volume, owner, ctx));
  }

  private client(pool: PoolConfig): TgtClient {
    return new TgtClient({
      controlPort: pool.iscsi?.tgtControlPort ?? this.opts.tgtControlPort ?? 0,
      ...(this.opts.socketPrefix ? { socketPrefix: this.opts.socketPrefix } : {}),
    });
  }

  private target(pool: PoolConfig, targets: readonly TgtTarget[], volume: string): TgtTarget | undefined {
    const iqn = iscsiTargetName(this.opts.storageHost, pool.name, volume);
    return targets.find((t) => t.name === iqn);
  }

  /** What `volume`'s target should look like, its fence (if any) included. */
  private want(pool: PoolConfig, volume: string, fence: VolumeFence | undefined): WantedTarget {
    return wantedTarget(
      this.opts.storageHost,
      pool,
      volume,
      volumeFile(pool, volume),
      fencedAcl(pool, fence),
    );
  }

  private async expose(
    pool: PoolConfig,
    volume: string,
    targets?: TgtTarget[],
    fences?: ReadonlyMap<string, VolumeFence>,
  ): Promise<void> {
    const client = this.client(pool);
    const fence = (fences ?? (await this.fences.read(pool.name))).get(volume);
    await exposeTarget(client, this.want(pool, volume, fence), targets ?? (await client.showTargets()));
  }

  private async ensurePoolNow(
    pool: PoolConfig,
    configHash: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void> {
    checkIscsiPool(pool);
    // Checked before anything changes: a pool with CHAP is never served without its password.
    const password = pool.chap ? chapPassword(pool, secrets) : undefined;
    ctx?.signal?.throwIfAborted();
    await mkdir(pool.path, { recursive: true, mode: 0o700 });
    const client = this.client(pool);
    let targets = await client.showTargets();
    const names = await volumeNames(pool);
    if (password !== undefined && pool.chap) {
      ctx?.progress?.(`setting CHAP account ${pool.chap.user} of pool ${pool.name}`);
      await setChapAccount(client, pool.chap.user, password);
      targets = await client.showTargets();
    }
    const fences = await this.fences.read(pool.name);
    for (const n of names) {
      ctx?.signal?.throwIfAborted();
      await this.expose(pool, n, targets, fences);
    }
    // A CHAP user the pool no longer has leaves tgtd (with its password) unless another pool still uses it.
    const before = (await this.records.read(pool.name))?.config.chap?.user;
    if (before && before !== pool.chap?.user) await this.dropAccount(client, pool.name, before);
    await this.records.write({ config: pool, configHash });
  }

  /** Deletes CHAP account `user` unless another recorded pool uses it; a missing account or tgtd is fine. */
  private async dropAccount(client: TgtClient, poolName: string, user: string): Promise<void> {
    const others = (await this.records.readAll('iscsi')).filter(
      (r) => r.config.name !== poolName && r.config.chap?.user === user,
    );
    if (others.length) return;
    await deleteChapAccount(client, user);
  }

  private async deletePoolNow(pool: PoolConfig, ctx?: OpContext): Promise<void> {
    checkIscsiPool(pool);
    const names = await volumeNames(pool);
    if (names.length)
      throw new ConflictError(
        `pool ${pool.name} still holds volume(s) ${names.join(', ')}: delete them first`,
        `pool/${pool.name}`,
      );
    ctx?.progress?.(`deleting pool ${pool.name}`);
    if (pool.chap) await this.dropAccount(this.client(pool), pool.name, pool.chap.user);
    await rmdir(pool.path).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
    await this.fences.remove(pool.name);
    await this.records.remove(pool.name);
  }

  async listPools(): Promise<ObservedPool[]> {
    const out: ObservedPool[] = [];
    for (const { config: pool, configHash } of await this.records.readAll('iscsi'))
      out.push(await observeIscsiPool(this.observeHost, pool, configHash));
    return out;
  }

  private async createVolumeNow(pool: PoolConfig, volume: VolumeConfig, ctx?: OpContext): Promise<void> {
    checkIscsiPool(pool);
    if (volume.encryption) unsupported('encryption', pool);
    if (volume.from?.linked) unsupported('linkedClones', pool);
    if (volume.format !== 'raw')
      throw new InvalidRequestError(`volume ${volume.name}: iscsi volumes are raw, not ${volume.format}`);
    checkSize(volume.name, volume.sizeMiB);
    const file = volumeFile(pool, volume.name);
    ctx?.signal?.throwIfAborted();
    if (!(await exists(file))) {
      await mkdir(pool.path, { recursive: true, mode: 0o700 });
      if (volume.from) await this.copyVolume(pool, volume.from.volume, volume.name, volume.sizeMiB, ctx);
      else {
        ctx?.progress?.(`creating volume ${volume.name} (${volume.sizeMiB} MiB) in pool ${pool.name}`);
        await createSparse(file, volume.sizeMiB);
      }
    }
    await this.expose(pool, volume.name);
  }

  /** A full copy of `source` (raw to raw, sparse) into a new file, grown to `sizeMiB` when larger. */
  private async copyVolume(pool: PoolConfig, source: string, name: string, sizeMiB: number, ctx?: OpContext) {
    const from = volumeFile(pool, source);
    if (!(await exists(from))) throw new NotFoundError('volume', source);
    // Copied while nobody can write it, so the copy is one moment of it.
    await this.whileClosed(pool, source, `copy it to ${name} consistently`, async () => {
      ctx?.progress?.(`copying volume ${source} to ${name} in pool ${pool.name}`);
      await convertInto(this.opts.runner, volumeFile(pool, name), ['-f', 'raw', from], ctx);
    });
    const file = volumeFile(pool, name);
    if ((await stat(file)).size < sizeMiB * MiB) await truncate(file, sizeMiB * MiB);
  }

  private async resizeVolumeNow(
    pool: PoolConfig,
    name: string,
    sizeMiB: number,
    ctx?: OpContext,
  ): Promise<void> {
    checkIscsiPool(pool);
    checkSize(name, sizeMiB);
    const file = volumeFile(pool, name);
    const s = await stat(file).catch(() => undefined);
    if (!s) throw new NotFoundError('volume', name);
    const now = s.size / MiB;
    if (sizeMiB < now)
      throw new InvalidRequestError(
        `volume ${name} is ${Math.ceil(now)} MiB: it can grow, not shrink to ${sizeMiB} MiB`,
        `volume/${name}`,
      );
    if (sizeMiB === now) return;
    // tgtd reads a LUN's size when it is added: the LUN is added again, which an open session would not survive
    // (tgtd removes a LUN under a session without a word).
    await this.whileClosed(pool, name, 'resize it', async (client, t) => {
      ctx?.progress?.(`growing volume ${name} to ${sizeMiB} MiB`);
      await truncate(file, sizeMiB * MiB);
      if (t?.luns.some((l) => l.lun === ISCSI_VOLUME_LUN)) await client.deleteLun(t.tid, ISCSI_VOLUME_LUN);
    });
  }

  /**
   * Runs `fn` while no initiator is logged in to `volume`'s target and none can log in: `ConflictError` naming the
   * initiators when one is; otherwise the target's ACL is lifted, the check made again (a login may have come in
   * between), and `expose` puts the target back as wanted afterwards, whatever `fn` did.
   */
  private async whileClosed(
    pool: PoolConfig,
    volume: string,
    what: string,
    fn: (client: TgtClient, t: TgtTarget | undefined) => Promise<void>,
  ): Promise<void> {
    const client = this.client(pool);
    let t = this.target(pool, await client.showTargets(), volume);
    refuseInUse(volume, t, what);
    try {
      if (t) {
        for (const a of t.acls) await client.unbindInitiatorAddress(t.tid, a);
        t = this.target(pool, await client.showTargets(), volume);
        refuseInUse(volume, t, what);
      }
      await fn(client, t);
    } finally {
      await this.expose(pool, volume);
    }
  }

  private async deleteVolumeNow(pool: PoolConfig, name: string, ctx?: OpContext): Promise<void> {
    checkIscsiPool(pool);
    const file = volumeFile(pool, name);
    const client = this.client(pool);
    const t = this.target(pool, await client.showTargets(), name);
    ctx?.progress?.(`deleting volume ${name} of pool ${pool.name}`);
    await removeTarget(client, name, t);
    await rm(file, { force: true });
    // Its fence goes with it: a volume made again under this name starts unfenced (its owner's next fence binds it,
    // with a token larger than any before: store versions only grow).
    const fences = await this.fences.read(pool.name);
    if (fences.delete(name)) await this.fences.write(pool.name, fences);
  }

  /**
   * Fences `volume` to `owner` (iscsi-fence.ts): refuses a stale token before anything changes, records a newer one
   * first, then narrows the target's ACL to the owner's address and closes every other initiator's connections.
   */
  private async fenceVolumeNow(
    pool: PoolConfig,
    volume: string,
    owner: FenceOwner,
    ctx?: OpContext,
  ): Promise<void> {
    checkIscsiPool(pool);
    const file = volumeFile(pool, volume);
    if (!(await exists(file))) throw new NotFoundError('volume', `${pool.name}/${volume}`);
    const address = ownerAcl(pool, owner.address);
    // A migration's target: let in too (inside the pool's clients as well), its sessions kept.
    const allowed = owner.peer ? [address, ownerAcl(pool, owner.peer.address)] : [address];
    const fences = await this.fences.read(pool.name);
    const have = fences.get(volume);
    const verdict = judgeFence(pool.name, volume, have, owner);
    if (verdict !== 'same' || !samePeer(have?.peer, owner.peer)) {
      const { host, address: a, token, peer } = owner;
      fences.set(volume, {
        host,
        address: a,
        token,
        at: new Date().toISOString(),
        ...(peer ? { peer } : {}),
      });
      await this.fences.write(pool.name, fences);
    }
    ctx?.signal?.throwIfAborted();
    ctx?.progress?.(
      `fencing volume ${pool.name}/${volume} to ${owner.host} (${address})${owner.peer ? ` and migration target ${owner.peer.host} (${owner.peer.address})` : ''}, token ${owner.token}`,
    );
    await this.expose(pool, volume, undefined, fences);
    const client = this.client(pool);
    const closed = await closeForeignSessions(
      client,
      async () => this.target(pool, await client.showTargets(), volume),
      allowed,
      `fencing volume ${pool.name}/${volume} to ${owner.host}`,
    );
    for (const c of closed)
      ctx?.progress?.(
        `closed the session of ${c.initiator || 'an initiator'} from ${c.address} to ${volume}`,
      );
  }

  private async importVolumeNow(
    pool: PoolConfig,
    name: string,
    sourcePath: string,
    ctx?: OpContext,
  ): Promise<void> {
    checkIscsiPool(pool);
    const file = volumeFile(pool, name);
    if (await exists(file)) throw new ConflictError(`volume ${name} already exists in pool ${pool.name}`);
    // The same checks as any pool's import (image-import.ts): a regular file, not a link, naming no other file.
    const source = await checkImportSource(this.opts.runner, sourcePath, ctx?.signal);
    checkSize(name, Math.ceil(source.virtualBytes / MiB));
    await mkdir(pool.path, { recursive: true, mode: 0o700 });
    ctx?.progress?.(`importing ${sourcePath} as volume ${name} of pool ${pool.name}`);
    // A LUN is raw bytes: an ISO is served as it is.
    const format = source.format === 'iso' ? 'raw' : source.format;
    await convertInto(this.opts.runner, file, ['-f', format, sourcePath], ctx);
    await this.expose(pool, name);
  }

  async createSnapshot(pool: PoolConfig): Promise<void> {
    unsupported('snapshots', pool);
  }
  async rollbackSnapshot(pool: PoolConfig): Promise<void> {
    unsupported('snapshots', pool);
  }
  async deleteSnapshot(pool: PoolConfig): Promise<void> {
    unsupported('snapshots', pool);
  }
}
