// Options of QemuDriver: where its state, images and helpers live, and the knobs tests and operators set.
import type { Runner } from '../../../exec/runner.js';
import type { StorageDriver } from '../../storage/types.js';
import type { NbdServers } from './backup-offline.js';
import type { IdRange } from './identity.js';

/** Default directory of images (`test-guest/` lives in it). */
export const DEFAULT_IMAGES_DIR = '/var/lib/vmlink/images';

/** Options of `QemuDriver`. */
export interface QemuDriverOptions {
  runner: Runner;
  /** Agent state directory; VMs live in `<stateDir>/vms/<name>/`. */
  stateDir: string;
  /** Network namespace QEMU runs in (where the taps are). */
  netns?: string;
  imagesDir?: string;
  launcherPath?: string;
  qemuUser?: string;
  qemuBinary?: string;
  storage?: StorageDriver;
  /** Skips the probe and uses this accelerator (tests, operators who know better). */
  accelerator?: 'kvm' | 'tcg';
  /** How long start() waits for QMP to report `running` (default `VM_START_TIMEOUT_MS`). */
  startTimeoutMs?: number;
  /** build/vmlink-qmp-fd: passes a tap descriptor to a running QEMU for NIC hot-plug. */
  qmpFdHelperPath?: string;
  /** How long a NIC unplug waits for the guest to release the device (default 30 s). */
  unplugTimeoutMs?: number;
  /** Range the VMs' own uids/gids come from (default `DEFAULT_VM_ID_RANGE`). */
  vmIdRange?: IdRange;
  /** Machine-wide claims of VM ids, shared by every agent on the machine (default `DEFAULT_VM_ID_CLAIMS_DIR`). */
  vmIdClaimsDir?: string;
  /** Size past which a VM's console log and QEMU log are rotated (default `VM_LOG_MAX_BYTES`). */
  logMaxBytes?: number;
  /** How often those logs are checked (default `VM_LOG_CHECK_INTERVAL_MS`). */
  logCheckIntervalMs?: number;
  /** The cgroup v2 mount per-VM cgroups go under, when it is one (default /sys/fs/cgroup). */
  cgroupRoot?: string;
  /** Root of /proc, /sys, /dev and /usr the confidential-VM detector reads (default `/`; tests use fixtures). */
  confidentialRoot?: string;
  /** qemu-nbd for stopped VMs' backups and restores (drivers/backup/qemu-nbd.ts); absent: those are refused. */
  nbdServers?: NbdServers;
}
