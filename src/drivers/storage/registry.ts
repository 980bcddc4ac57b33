// Storage backends by name, like the network ones; the agent's hypervisor driver picks one.
import type { Runner } from '../../exec/runner.js';
import { DirStorage } from './dir.js';
import type { StorageDriver } from './types.js';

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
