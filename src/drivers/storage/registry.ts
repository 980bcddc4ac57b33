// Storage backends by name, like the network ones: `storageDrivers` for the disks in a VM's own directory (the
// hypervisor driver picks one), `poolBackends` for the pools of issue 10 (the agent picks one by pool type).
import type { Runner } from '../../exec/runner.js';
import { UnsupportedError } from '../../shared/errors.js';
import type { PoolType } from '../../shared/storage.js';
import { DirStorage } from './dir.js';
import { DirPool } from './dir-pool.js';
import { IscsiPool } from './iscsi.js';
import { NfsPool } from './nfs.js';
import type { NfsServer } from './nfs-server.js';
import type { PoolBackend, StorageDriver } from './types.js';

/** What every storage backend constructor receives. */
export interface StorageDriverOptions {
  runner: Runner;
}

/** Storage backend constructors by name. */
export const storageDrivers = {
  dir: (opts: StorageDriverOptions) => new DirStorage(opts.runner),
} satisfies Record<string, (opts: StorageDriverOptions) => StorageDriver>;

/** Name of a storage backend. */
export type StorageDriverName = keyof typeof storageDrivers;

/** What every pool backend constructor receives (each takes what its kind needs). */
export interface PoolBackendOptions {
  runner: Runner;
  /** The agent's state directory: pool records live in `<stateDir>/pools` (pool-state.ts). */
  stateDir: string;
  /** This host's name in the spec (iSCSI target names carry it). */
  storageHost: string;
  /** iscsi: the control socket number of the tgtd serving this host's pools (`tgtadm -C N`). */
  tgtControlPort?: number;
  /** nfs: the rpcbind + nfs-ganesha instance serving this host's exports (`--nfs-dir`). */
  ganesha?: NfsServer;
}

/** Pool backend constructors by pool type. */
export const poolBackends = {
  dir: (opts) => new DirPool(opts),
  iscsi: (opts) => new IscsiPool(opts),
  nfs: (opts) => new NfsPool(opts),
} satisfies Record<PoolType, (opts: PoolBackendOptions) => PoolBackend>;

/** The backend of pools of `type`; `UnsupportedError` for a type this build has no backend for. */
export function poolBackend(type: PoolType, opts: PoolBackendOptions): PoolBackend {
  const make = (poolBackends as Partial<typeof poolBackends>)[type];
  if (!make)
    throw new UnsupportedError(`pools of type ${type} are not supported by this agent`, `pool/${type}`);
  return make(opts);
}
