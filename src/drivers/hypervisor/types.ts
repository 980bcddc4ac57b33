import type { ConfidentialCapabilities, HostCapabilities, ObservedVm, VmConfig } from '../../shared/model.js';
import type { OpContext } from '../../shared/op.js';
import type { GuestExecResult, GuestInterface } from '../../shared/results.js';
import type { ObservedSnapshot } from '../../shared/storage.js';

/** Guest results, defined in shared/ (the agent's wire contract carries them); re-exported for drivers. */
export type { GuestExecResult, GuestInterface } from '../../shared/results.js';

/**
 * Values of controller-kept secrets a VM step needs (base64), by name: held in memory for that step only, handed to
 * qemu-img on stdin and to QEMU over QMP, never written to disk, argv or a log.
 */
export type SecretValues = ReadonlyArray<{ name: string; value: string }>;

/** A disk a running QEMU has open, as `query-block` shows it. */
export interface OpenDisk {
  /** The disk's name (`root`, `cdrom`, or `disks[].name`). */
  disk: string;
  /** What QEMU opened: a file path, or the iscsi/nfs URL without credentials. */
  target: string;
  readOnly: boolean;
}

/** A hypervisor backend on one host (QEMU). */
export interface HypervisorDriver {
  // Host.
  /** Probes the accelerator once (KVM with a timeout, else TCG) and caches the answer. */
  accelerator(): Promise<Pick<HostCapabilities, 'accelerator' | 'acceleratorReason'>>;
  /** Which confidential-VM kinds this host can launch (absent: none). */
  confidential?(): Promise<ConfidentialCapabilities>;
  /** Re-adopts VMs left running by an earlier agent (pidfile + QMP), without restarting them. */
  adopt(): Promise<void>;

  // VMs.
  /** Creates the VM's directory, disks and launch config; its taps must exist. Idempotent for the same config. */
  create(cfg: VmConfig, configHash: string, ctx?: OpContext, secrets?: SecretValues): Promise<void>;
  /** Starts a created VM (`secrets`: its encrypted disks' keys); `InvalidStateError` if it is running. */
  start(name: string, ctx?: OpContext, secrets?: SecretValues): Promise<void>;
  /** Stops a VM: ACPI powerdown then quit after `timeoutMs`, or at once when `force`. */
  stop(name: string, opts: { force: boolean; timeoutMs?: number }, ctx?: OpContext): Promise<void>;
  /**
   * Fences a VM at once (the cluster watchdog): QMP quit, SIGKILL within about a second, without waiting for
   * anything else the VM is doing. Resolves whether a running QEMU was stopped. Absent: the agent uses a forced stop.
   */
  kill?(name: string): Promise<boolean>;
  /** Stops (forcefully) and removes a VM with its directory; a missing VM is not an error. */
  delete(name: string, ctx?: OpContext): Promise<void>;
  /**
   * Plugs and unplugs NICs and disks of the running VM so that they match `cfg` (nothing else may differ; a
   * VM-directory disk may also grow), then stores `cfg`; `secrets`: the values added disks need (LUKS keys, CHAP
   * passwords). `UnsupportedError` when it runs without hot-plug slots (see `canHotplug`).
   */
  hotplug(cfg: VmConfig, configHash: string, ctx?: OpContext, secrets?: SecretValues): Promise<void>;
  // Disks (issue 10): optional until every hypervisor has them; the agent answers UnsupportedError without.
  /**
   * Grows disk `disk` (`root` or a `disks[].name`) of the running VM to `sizeMiB` through QMP `block_resize` (the
   * guest sees it at once); a smaller size is refused, an iSCSI LUN too (POOL_FEATURE_REASONS.iscsi.onlineResize).
   */
  resizeDisk?(name: string, disk: string, sizeMiB: number, ctx?: OpContext): Promise<void>;
  /**
   * Snapshots all of the VM's qcow2 disks at one instant (a QMP transaction when it runs, qemu-img when it is
   * stopped); with `memory` (running VMs only) also its RAM and device state. Refuses a VM with a disk that cannot
   * snapshot (raw iSCSI LUN), naming it.
   */
  snapshot?(name: string, snapshot: string, opts: { memory: boolean }, ctx?: OpContext): Promise<void>;
  /**
   * Restores every disk (and the RAM, when saved) to `snapshot`; a running VM without saved RAM must be stopped. A
   * stopped VM with an encrypted disk is refused (qemu-img would need its key): snapshot and roll back running.
   */
  rollback?(name: string, snapshot: string, ctx?: OpContext): Promise<void>;
  deleteSnapshot?(name: string, snapshot: string, ctx?: OpContext): Promise<void>;
  /** Whole-VM snapshots: those present on every one of its snapshot-capable disks. */
  snapshots?(name: string): Promise<ObservedSnapshot[]>;
  /** The block devices the running VM's QEMU has open (query-block), by disk name, for verify. */
  openDisks?(name: string): Promise<OpenDisk[]>;

  /** Whether VM `name` runs and can take NIC and disk hot-plug. */
  canHotplug(name: string): Promise<boolean>;
  /** VMs on this host. */
  list(): Promise<ObservedVm[]>;
  /** The VM's launch config as created, or undefined. */
  config(name: string): Promise<VmConfig | undefined>;

  // Guest.
  /** Runs argv in the guest through qemu-guest-agent. */
  guestExec(
    name: string,
    argv: string[],
    opts?: { timeoutMs?: number; input?: string },
  ): Promise<GuestExecResult>;
  /** The guest's NICs and addresses through qemu-guest-agent. */
  guestInterfaces(name: string): Promise<GuestInterface[]>;
  /** Path of the VM's serial console unix socket. */
  consolePath(name: string): string;
  /** The last `maxBytes` of the VM's serial console log; a planted link or FIFO is refused (`UnsafeFileError`). */
  consoleTail(name: string, maxBytes: number): Promise<string>;
}
