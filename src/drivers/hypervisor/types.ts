import type { Socket } from 'node:net';
import type { FullReadReason } from '../../shared/backup.js';
import type {
  ConfidentialCapabilities,
  HostCapabilities,
  HostResources,
  ObservedVm,
  VmConfig,
} from '../../shared/model.js';
import type { OpContext } from '../../shared/op.js';
import type { GuestExecResult, GuestInterface } from '../../shared/results.js';
import type { DiskSource, ObservedSnapshot } from '../../shared/storage.js';

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

/** Counters of one VM disk since its QEMU started (`query-blockstats`). */
export interface VmDiskCounters {
  /** `root` or the spec's `disks[].name`. */
  disk: string;
  readBytes: number;
  writeBytes: number;
  readOps: number;
  writeOps: number;
}

/** One VM's resource figures (metrics, docs/observability.md); NIC counters are the tap's, read by the agent. */
export interface VmStats {
  name: string;
  /** Whether its QEMU process runs (a paused VM's too). */
  running: boolean;
  /** Its QEMU process, while it runs: the agent's `processes` scope counts it as the host's. */
  pid?: number;
  /** CPU seconds of its QEMU process (0 when stopped). */
  cpuSecondsTotal: number;
  memoryRssBytes: number;
  memoryConfiguredBytes: number;
  disks: VmDiskCounters[];
  /** Its NICs: QEMU device id (`nic0`, ... by slot) and the host tap behind each. */
  nics: Array<{ nic: string; tap: string }>;
}

/** Options of `backupOpen`. */
export interface BackupOpenOptions {
  /** Dirty bitmap names (docs/backup.md: `vmlink-<policy>-<stamp>`): the base snapshot's, and the one this starts. */
  bitmaps: { base?: string; next: string };
  /** Freeze the guest's filesystems for the fleece instant when its guest agent answers. */
  freeze: boolean;
  /** Read every disk whole (the bitmap still starts). */
  full: boolean;
}

/** One disk of a backup view: an NBD export on a unix socket this process may connect to. */
export interface BackupViewDisk {
  /** `root` or `disks[].name`. */
  name: string;
  sizeBytes: number;
  /** Host path of the NBD server's unix socket, and the export's name. */
  socket: string;
  exportName: string;
  /** NBD meta context whose extents are the blocks changed since the base (`qemu:dirty-bitmap:<base>`), or why not. */
  changed: { context: string } | { fullReason: FullReadReason };
}

/** A point-in-time view of a VM's disks (see `HypervisorDriver.backupOpen`). */
export interface BackupView {
  consistency: 'frozen' | 'crash-consistent' | 'stopped';
  consistencyNote?: string;
  /** When the view was taken (the transaction's instant). */
  at: Date;
  disks: BackupViewDisk[];
  /** The backup is safely stored: drop the base bitmaps, keep `next`, end the view. */
  commit(): Promise<void>;
  /** The backup failed: fold `next` back into the base bitmaps (or drop `next` when there is no base), end the view. */
  abort(): Promise<void>;
}

/** A stopped VM's disks writable over NBD (see `HypervisorDriver.restoreOpen`). */
export interface RestoreView {
  disks: Array<{ name: string; sizeBytes: number; socket: string; exportName: string }>;
  /** Flushes and stops the exports. */
  close(): Promise<void>;
}

/** Where a live migration stands, from the source's `query-migrate`. */
export interface MigrationProgress {
  /** QEMU's status: `none`, `setup`, `active`, `device`, `completed`, `failed`, `cancelled`, ... */
  status: string;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  /** Transfer rate QEMU measured (Mbit/s). */
  mbps?: number;
  /** Rounds of dirty-page sync so far (1 = first pass). */
  dirtySyncCount?: number;
  /** Bytes sent while the guest was paused (QEMU's `downtime-bytes`), once completed. */
  downtimeBytes?: number;
  /** QEMU's own figure of the guest's pause (ms), once completed. */
  downtimeMs?: number;
  expectedDowntimeMs?: number;
  totalTimeMs?: number;
  /** Why it failed (QEMU's words). */
  error?: string;
  /** Block migration: bytes of the local disks copied so far, of those known to copy (both grow while it writes). */
  diskDoneBytes?: number;
  diskTotalBytes?: number;
}

/** Target of a block migration: where the source's NBD connections go, and how many bytes they may carry. */
export interface IncomingDisks {
  /** The unix socket of the target QEMU's NBD server. */
  path: string;
  maxBytes: number;
  /** NBD connections it takes at most. */
  maxConnections: number;
}

/** The two halves of a live migration of one VM (docs/mobility.md), where the hypervisor has them. */
export interface HypervisorMigrations {
  /**
   * Source: sends running VM `name` through `relay` (called once with the byte stream to carry to the target).
   * Resolves with the last progress (`completed`: the guest is paused here); on failure the guest runs on here (except
   * with `holdOnceSent` once QEMU completed).
   */
  migrateOut(
    name: string,
    opts: {
      downtimeLimitMs: number;
      /**
       * The downtime limit QEMU starts its switch-over checks with, doubled each pass until `downtimeLimitMs`; absent
       * or 0: the limit throughout. Bench variants only (qemu/migrate.ts says why).
       */
      downtimeStartMs?: number;
      onProgress?: (p: MigrationProgress) => void;
      signal?: AbortSignal;
      /** Block migration: carries one NBD connection of QEMU's to the target's export (absent: local disks refused). */
      nbdTunnel?: (conn: Socket) => void;
      /** QEMU's bandwidth cap (bytes/s); absent: lifted (the relay is the limit). Bench variants only. */
      maxBandwidthBytes?: number;
      /** Nice value of the guest's vCPU threads while it migrates (restored after). Bench variants only. */
      vcpuNice?: number;
      /**
       * The target resumes on arrival: a failure once QEMU completed (the whole state sent, the guest paused here)
       * leaves the guest paused, and the last progress reported has status `held`; only `resumeHere` runs it again.
       */
      holdOnceSent?: boolean;
    },
    relay: (stream: Socket) => Promise<void>,
  ): Promise<MigrationProgress>;
  /** Source, after a completed migration the target could not take over: the guest runs here again. */
  resumeHere(name: string): Promise<void>;
  /**
   * Target: starts created VM `name` paused, waiting for the stream; resolves with the socket to write it into and,
   * when it has local disks, their NBD export (block migration).
   */
  migrateIn(
    name: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<{ stream: Socket; disks?: IncomingDisks }>;
  /** Target: waits until the whole state arrived. */
  awaitArrived(name: string, timeoutMs: number): Promise<void>;
  /** Target: the guest runs here and announces itself. */
  resumeTarget(name: string): Promise<void>;
  /**
   * Source, before a migration: how fast running VM `name` dirties its memory (MiB/s), measured over `seconds`;
   * undefined where the hypervisor cannot tell.
   */
  dirtyRate?(name: string, seconds: number): Promise<number | undefined>;
}

/** A hypervisor backend on one host (QEMU). */
export interface HypervisorDriver {
  // Host.
  /** Probes the accelerator once (KVM with a timeout, else TCG) and caches the answer. */
  accelerator(): Promise<Pick<HostCapabilities, 'accelerator' | 'acceleratorReason'>>;
  /** Which confidential-VM kinds this host can launch (absent: none). */
  confidential?(): Promise<ConfidentialCapabilities>;
  /** CPUs to pin to, CPU quotas and huge pages here (absent: the report says nothing of them). */
  hostResources?(): Promise<HostResources>;
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
   * Moves disk `disk` of the running VM to a new volume `to.volume` in the dir pool at `to.dir` on this host, live
   * (mirror, then pivot; docs/mobility.md); the VM's stored config names the new source, the old file is removed.
   */
  moveDisk?(name: string, disk: string, to: MoveDiskTarget, ctx?: OpContext): Promise<MoveDiskResult>;
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

  // Backups (issue 12, docs/backup.md): optional like the disk operations.
  /**
   * A consistent point-in-time read view of the VM's disks over NBD: while it runs, the guest's filesystems frozen
   * (when `freeze` and its agent answers) for one QMP transaction that starts fleecing and a new dirty bitmap
   * `bitmaps.next` per disk; while stopped, `qemu-nbd` read-only on each disk. Each disk says whether the bitmap
   * `bitmaps.base` can stand for "changed since the base snapshot" (its NBD meta context) or why the disk must be read
   * whole. The caller reads, then `commit()`s (the base bitmap is dropped, `next` stays) or `abort()`s (the base
   * bitmap keeps counting: `next` is merged into it). Nothing of the view survives either.
   */
  backupOpen?(
    name: string,
    opts: BackupOpenOptions,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<BackupView>;
  /** The stopped VM's disks exported writable over NBD (qemu-nbd) for a restore; `close()` flushes and stops them. */
  restoreOpen?(name: string, ctx?: OpContext, secrets?: SecretValues): Promise<RestoreView>;
  /**
   * Removes what a backup cut short by an agent crash left in running QEMUs (fleece nodes, the export, the NBD
   * server, a half-made bitmap), keeping the base bitmaps counting. Called by `adopt()`; idempotent.
   */
  backupCleanup?(name: string): Promise<void>;

  /** Live migration (issue 13): optional; the agent answers UnsupportedError without. */
  readonly migrations?: HypervisorMigrations;

  /** Whether VM `name` runs and can take NIC and disk hot-plug. */
  canHotplug(name: string): Promise<boolean>;
  /** VMs on this host. */
  list(): Promise<ObservedVm[]>;
  /**
   * Resource figures of every VM on this host (metrics), read without the VMs' locks and bounded in time (a QEMU
   * that does not answer QMP still gives its CPU and memory). Absent: the agent reports no VMs.
   */
  vmStats?(): Promise<VmStats[]>;
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

/** Where `moveDisk` puts a disk: a dir pool on the VM's host (its directory) and the new volume's name. */
export interface MoveDiskTarget {
  pool: string;
  dir: string;
  volume: string;
}

/** What a disk move did. */
export interface MoveDiskResult {
  vm: string;
  disk: string;
  /** Where it was: `pool <name>` or `the VM directory`. */
  from: string;
  to: DiskSource;
  copiedBytes: number;
  ms: number;
}
