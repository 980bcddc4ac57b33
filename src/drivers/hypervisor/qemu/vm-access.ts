// The driver's per-VM accessors, keyed by VM name, handed as one object to the modules split out of driver.ts
// (disk ops, backups, launch, migrations, block jobs) instead of each getting its own list of closures.

import type { VmConfig } from '../../../shared/model.js';
import type { VmPaths } from './cmdline.js';
import type { VmIdentity } from './identity.js';
import type { FdChannel } from './pass-fd.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

export interface VmAccess {
  paths: (name: string) => VmPaths;
  stored: (name: string) => Promise<StoredVm | undefined>;
  /** The stored VM; NotFoundError when there is none. */
  mustStored: (name: string) => Promise<StoredVm>;
  writeStored: (name: string, vm: StoredVm) => Promise<void>;
  /** Its QEMU's pid while it runs (pidfile checked against the process). */
  livePid: (name: string) => Promise<number | undefined>;
  running: (name: string) => Promise<boolean>;
  identity: (name: string) => Promise<VmIdentity>;
  qmp: (name: string, timeoutMs?: number) => Promise<QmpClient>;
  dropQmp: (name: string) => Promise<void>;
  fdChannel: (name: string) => FdChannel;
  /** Runs `fn` under the VM's lock (one operation per VM at a time). */
  locked: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
}

/** Builds a VM's QEMU command line (the driver's `argvOf`), shared by the create and launch paths. */
export type ArgvBuilder = (
  cfg: VmConfig,
  accel: 'kvm' | 'tcg',
  nicSlots: readonly number[] | undefined,
  diskSlots?: readonly number[],
) => Promise<string[]>;
