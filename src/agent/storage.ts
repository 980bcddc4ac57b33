// Storage on a host's agent (issue 10): pool and volume actions go to the pool backend of the pool's type, a VM's
// disk actions (online resize, snapshots) to the hypervisor, and every backend's pools feed the host report. A
// storage host (`vmlink agent --role storage`) serves pools only: it runs no VMs or networks.
import { realpath } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import type { OpContext } from '../drivers/network/types.js';
import { PoolStateStore } from '../drivers/storage/pool-state.js';
import type { PoolBackend } from '../drivers/storage/types.js';
import {
  ConflictError,
  InvalidRequestError,
  NotFoundError,
  UnsupportedError,
  type VmlinkError,
} from '../shared/errors.js';
import { log } from '../shared/log.js';
import type { HostReport, VmConfig } from '../shared/model.js';
import {
  type ObservedPool,
  type ObservedSnapshot,
  POOL_FEATURE_REASONS,
  type PoolConfig,
  type PoolType,
} from '../shared/storage.js';
import { VERSION } from '../shared/version.js';
import type { AgentAction } from './wire.js';
import {
  DEFAULT_POOL_ROOT,
  diskSourceIssues,
  importPathIssues,
  poolPathIssues,
  type WireIssue,
} from './wire-checks.js';

/** What a host is for: `compute` runs VMs and networks (and dir pools), `storage` serves iscsi and nfs pools. */
export type HostRole = 'compute' | 'storage';

/** Kinds of the storage actions of the wire union (wire-storage.ts). */
export const STORAGE_ACTION_KINDS = [
  'pool.ensure',
  'pool.delete',
  'volume.ensure',
  'volume.resize',
  'volume.delete',
  'volume.import',
  'volume.snapshot',
  'volume.rollback',
  'volume.snapshotDelete',
  'volume.fence',
  'vm.resizeDisk',
  'vm.moveDisk',
  'vm.snapshot',
  'vm.rollback',
  'vm.snapshotDelete',
] as const;

/** A storage action. */
export type StorageAction = Extract<AgentAction, { kind: (typeof STORAGE_ACTION_KINDS)[number] }>;

const storageKinds: ReadonlySet<string> = new Set(STORAGE_ACTION_KINDS);

/** Whether `action` is one of the storage actions this module dispatches. */
export const isStorageAction = (action: AgentAction): action is StorageAction =>
  storageKinds.has(action.kind);

/** Whether `action` acts on a VM or a network, which a storage host refuses. */
export const isComputeAction = (action: AgentAction): boolean =>
  !isStorageAction(action) || action.kind.startsWith('vm.');

/** Dependencies of the storage part of an agent. */
export interface StorageDeps {
  host: string;
  role: HostRole;
  /** Pool backends of this host, by pool type (dir on a compute host; iscsi and nfs on a storage host). */
  pools: Partial<Record<PoolType, PoolBackend>>;
  hypervisor: HypervisorDriver;
  /** Directories pools may be made below (`--pool-root`; default /var/lib/vmlink/pools). */
  poolRoots: readonly string[];
  /** Directories image imports may read from (the pool roots and /var/lib/vmlink/images). */
  importRoots: readonly string[];
  /** The pool records the backends keep (`<stateDir>/pools`): a pool's config for actions that name only it. */
  records: PoolStateStore;
}

/** Where image imports may read from besides the pool roots. */
const IMAGE_IMPORT_ROOT = '/var/lib/vmlink/images';

/** Applies storage actions and observes pools on one host. */
export class StorageOps {
  constructor(private readonly deps: StorageDeps) {}

  /** The storage part of host `host`'s agent, with the defaults of a compute host without pools. */
  static of(
    host: string,
    hypervisor: HypervisorDriver,
    stateDir: string,
    o: Partial<Pick<StorageDeps, 'role' | 'pools' | 'poolRoots' | 'importRoots'>> = {},
  ): StorageOps {
    const poolRoots = o.poolRoots ?? [DEFAULT_POOL_ROOT];
    return new StorageOps({
      host,
      hypervisor,
      role: o.role ?? 'compute',
      pools: o.pools ?? {},
      poolRoots,
      importRoots: o.importRoots ?? [...poolRoots, IMAGE_IMPORT_ROOT],
      records: new PoolStateStore(stateDir),
    });
  }

  /** Refuses a VM or network action on a storage host, naming the host's role. */
  assertRoleAllows(action: AgentAction): void {
    if (this.deps.role === 'storage' && isComputeAction(action))
      throw new UnsupportedError(
        `host ${this.deps.host} is a storage host (vmlink agent --role storage): it serves pools and runs no VMs or networks, so it refuses ${action.kind}; place VMs and networks on a compute host`,
        `host/${this.deps.host}`,
      );
  }

  /** Applies one storage action. */
  async execute(action: StorageAction, ctx: OpContext = {}): Promise<void> {
    this.assertRoleAllows(action);
    const { hypervisor } = this.deps;
    switch (action.kind) {
      case 'pool.ensure':
        refuse(poolPathIssues(action.pool.path, this.deps.poolRoots), `pool/${action.pool.name}`);
        return this.backend(action.pool.type, action.pool.name).ensurePool(
          action.pool,
          action.configHash,
          ctx,
          action.secrets,
        );
      case 'pool.delete':
        refuse(poolPathIssues(action.pool.path, this.deps.poolRoots), `pool/${action.pool.name}`);
        return this.backend(action.pool.type, action.pool.name).deletePool(action.pool, ctx);
      case 'volume.ensure': {
        const v = action.volume;
        const pool = await this.pool(v.pool);
        return this.backend(pool.type, pool.name).createVolume(pool, v, ctx, action.secrets);
      }
      case 'volume.resize': {
        const pool = await this.pool(action.pool);
        await this.assertNotOpen(pool.name, action.name, 'grow', 'it grows online through its VM');
        return this.backend(pool.type, pool.name).resizeVolume(
          pool,
          action.name,
          action.sizeMiB,
          ctx,
          action.secrets,
        );
      }
      case 'volume.delete': {
        const pool = await this.pool(action.pool);
        const users = await this.localUsers(pool.name, action.name, false);
        if (users.length)
          throw new ConflictError(
            `volume ${pool.name}/${action.name} is a disk of VM ${users.join(', ')} on ${this.deps.host}: detach it (remove it from the VM in the spec and apply) before deleting it`,
            `volume/${pool.name}/${action.name}`,
          );
        return this.backend(pool.type, pool.name).deleteVolume(pool, action.name, ctx);
      }
      case 'volume.import': {
        const source = await this.importSource(action.sourcePath, `volume/${action.pool}/${action.name}`);
        const pool = await this.pool(action.pool);
        return this.backend(pool.type, pool.name).importVolume(pool, action.name, source, ctx);
      }
      case 'volume.snapshot':
      case 'volume.rollback':
      case 'volume.snapshotDelete': {
        const pool = await this.pool(action.pool);
        const b = this.backend(pool.type, pool.name);
        const verb = {
          'volume.snapshot': 'snapshot',
          'volume.rollback': 'roll back',
          'volume.snapshotDelete': 'delete a snapshot of',
        }[action.kind];
        await this.assertNotOpen(pool.name, action.name, verb, 'use vmlink vm snapshot / vm rollback on it');
        // An encrypted volume's key comes in `secrets`: qemu-img must open it.
        const args = [pool, action.name, action.snapshot, ctx, action.secrets] as const;
        if (action.kind === 'volume.snapshot') return b.createSnapshot(...args);
        if (action.kind === 'volume.rollback') return b.rollbackSnapshot(...args);
        return b.deleteSnapshot(...args);
      }
      case 'volume.fence': {
        const pool = await this.pool(action.pool);
        const b = this.backend(pool.type, pool.name);
        if (!b.features.fence || !b.fenceVolume)
          throw new UnsupportedError(
            `pool ${pool.name} (${pool.type}) cannot fence volume ${action.volume}: ${POOL_FEATURE_REASONS[pool.type]?.fence ?? `${pool.type} pools cannot fence`}`,
            `volume/${pool.name}/${action.volume}`,
          );
        return b.fenceVolume(pool, action.volume, action.owner, ctx);
      }
      case 'vm.resizeDisk':
        await this.vm(action.name);
        if (!hypervisor.resizeDisk) throw this.noHypervisorSupport('online disk resize', action.name);
        return hypervisor.resizeDisk(action.name, action.disk, action.sizeMiB, ctx);
      case 'vm.moveDisk': {
        await this.vm(action.name);
        if (!hypervisor.moveDisk) throw this.noHypervisorSupport('moving a disk', action.name);
        const pool = await this.pool(action.pool);
        if (pool.type !== 'dir')
          throw new UnsupportedError(
            `pool ${pool.name} is ${pool.type}: a disk moves only into a dir pool of its host for now`,
            `pool/${pool.name}`,
          );
        const to = { pool: pool.name, dir: pool.path, volume: action.volume };
        await hypervisor.moveDisk(action.name, action.disk, to, ctx);
        return;
      }
      case 'vm.snapshot':
        await this.vm(action.name);
        if (!hypervisor.snapshot) throw this.noHypervisorSupport('VM snapshots', action.name);
        return hypervisor.snapshot(action.name, action.snapshot, { memory: action.memory }, ctx);
      case 'vm.rollback':
        await this.vm(action.name);
        if (!hypervisor.rollback) throw this.noHypervisorSupport('VM rollback', action.name);
        return hypervisor.rollback(action.name, action.snapshot, ctx);
      case 'vm.snapshotDelete':
        await this.vm(action.name);
        if (!hypervisor.deleteSnapshot) throw this.noHypervisorSupport('VM snapshots', action.name);
        return hypervisor.deleteSnapshot(action.name, action.snapshot, ctx);
    }
  }

  /** Whole-VM snapshots of VM `name` (`GET /v1/vms/:name/snapshots`). */
  async vmSnapshots(name: string): Promise<ObservedSnapshot[]> {
    if (this.deps.role === 'storage') throw new NotFoundError('vm', name);
    await this.vm(name);
    if (!this.deps.hypervisor.snapshots) throw this.noHypervisorSupport('VM snapshots', name);
    return this.deps.hypervisor.snapshots(name);
  }

  /** Every pool of every backend; a backend that cannot answer is logged and left out (the report still goes). */
  async listPools(): Promise<ObservedPool[]> {
    const lists = await Promise.all(
      Object.entries(this.deps.pools).map(([type, b]) =>
        b.listPools().catch((e: unknown) => {
          log.warn({ type, err: (e as Error).message }, 'cannot list the pools of a backend');
          return [];
        }),
      ),
    );
    return lists.flat();
  }

  /**
   * Refuses a VM config whose `file` disks are not volumes of dir pools this host holds (root opens them for the
   * VM's QEMU, so a forged path must not get through).
   */
  async assertDiskSources(vm: VmConfig): Promise<void> {
    const files = [...vm.disks.map((d) => d.source), vm.rootSource].filter((s) => s?.kind === 'file');
    if (!files.length) return;
    const held = new Map<string, string>();
    for (const r of await this.deps.records.readAll('dir')) held.set(r.config.name, r.config.path);
    for (const p of await this.listPools())
      if (p.config && p.type === 'dir' && !held.has(p.name)) held.set(p.name, p.config.path);
    refuse(diskSourceIssues(vm, held), `vm/${vm.name}`);
  }

  /**
   * The file an import may read: below an import root as named and once links are resolved (a link in the image
   * directory must not lead root to /etc/shadow); the resolved path is what the backend reads.
   */
  private async importSource(path: string, subject: string): Promise<string> {
    refuse(importPathIssues(path, this.deps.importRoots), subject);
    let real: string;
    try {
      real = await realpath(path);
    } catch (e) {
      throw new NotFoundError('image file', `${path} (${(e as NodeJS.ErrnoException).code ?? 'unreadable'})`);
    }
    const roots = await Promise.all(this.deps.importRoots.map((r) => realpath(r).catch(() => r)));
    refuse(importPathIssues(real, roots), subject);
    return real;
  }

  /** The config of pool `name` as this host's backend realised it: its record, else what its backend reports. */
  private async pool(name: string): Promise<PoolConfig> {
    const record = await this.deps.records.read(name);
    if (record) return record.config;
    const found = (await this.listPools()).find((p) => p.name === name);
    if (!found) throw new NotFoundError('pool', name);
    if (!found.config)
      throw new UnsupportedError(
        `pool ${name} on ${this.deps.host} has no recorded config: apply the spec that declares it to repair it`,
        `pool/${name}`,
      );
    return found.config;
  }

  /** The backend of pool type `type`, or an error saying which host serves such pools. */
  private backend(type: PoolType, pool: string): PoolBackend {
    const b = this.deps.pools[type];
    if (b) return b;
    const has = Object.keys(this.deps.pools).join(', ') || 'none';
    const fix =
      type === 'dir'
        ? 'a dir pool lives on a compute host'
        : `an ${type} pool lives on a storage host (vmlink agent --role storage${type === 'nfs' ? ' --nfs-dir DIR' : ''})`;
    throw new UnsupportedError(
      `pool ${pool} is of type ${type}, which host ${this.deps.host} (role ${this.deps.role}) does not serve (it serves: ${has}); ${fix}`,
      `pool/${pool}`,
    );
  }

  /** VMs on this host whose config uses volume `pool/volume` (running ones only when `runningOnly`). */
  private async localUsers(pool: string, volume: string, runningOnly: boolean): Promise<string[]> {
    if (this.deps.role === 'storage') return [];
    const { hypervisor } = this.deps;
    const users: string[] = [];
    for (const vm of await hypervisor.list()) {
      if (runningOnly && vm.state !== 'running') continue;
      const cfg = vm.config ?? (await hypervisor.config(vm.name));
      const sources = [...(cfg?.disks ?? []).map((d) => d.source), cfg?.rootSource];
      if (sources.some((s) => s?.pool === pool && s.volume === volume)) users.push(vm.name);
    }
    return users;
  }

  /** Refuses to `verb` a volume a running VM on this host has open (`instead`: what to do). */
  private async assertNotOpen(pool: string, volume: string, verb: string, instead: string): Promise<void> {
    const users = await this.localUsers(pool, volume, true);
    if (users.length)
      throw new ConflictError(
        `cannot ${verb} volume ${pool}/${volume} while running VM ${users.join(', ')} has it open; ${instead}, or stop the VM first`,
        `volume/${pool}/${volume}`,
      );
  }

  private async vm(name: string): Promise<void> {
    if (!(await this.deps.hypervisor.list()).some((v) => v.name === name))
      throw new NotFoundError('vm', name);
  }

  private noHypervisorSupport(what: string, vm: string): VmlinkError {
    return new UnsupportedError(`the hypervisor driver of ${this.deps.host} has no ${what} yet`, `vm/${vm}`);
  }
}

/** A storage host's report: its pools; no VMs, networks or accelerator (it is never probed for KVM). */
export async function storageHostReport(host: string, storage: StorageOps): Promise<HostReport> {
  return {
    host,
    agentVersion: VERSION,
    capabilities: {
      accelerator: 'tcg',
      acceleratorReason: 'storage host: runs no VMs, KVM not probed',
      cpus: cpus().length,
      memoryMiB: Math.floor(totalmem() / 1048576),
      network: {},
      backends: [],
    },
    networks: [],
    vms: [],
    pools: await storage.listPools(),
  };
}

/** Throws an `InvalidRequestError` listing `issues` (an action the agent does not take on trust). */
function refuse(issues: WireIssue[], subject: string): void {
  if (!issues.length) return;
  throw new InvalidRequestError(issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '), subject);
}
