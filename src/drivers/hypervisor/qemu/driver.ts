import { join, resolve } from 'node:path';
import type { Runner } from '../../../exec/runner.js';
import { InvalidStateError } from '../../../shared/errors.js';
import {
  GUEST_AGENT_BOOT_TIMEOUT_MS,
  NIC_UNPLUG_TIMEOUT_MS,
  VM_LOG_CHECK_INTERVAL_MS,
  VM_LOG_MAX_BYTES,
  VM_START_TIMEOUT_MS,
} from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import type {
  ConfidentialCapabilities,
  HostCapabilities,
  HostResources,
  ObservedVm,
  VmConfig,
} from '../../../shared/model.js';
import { startQemuNbd, stopQemuNbd } from '../../backup/qemu-nbd.js';
import type { OpContext } from '../../network/types.js';
import { poolUsage } from '../../storage/qcow2-listing.js';
import { storageDrivers } from '../../storage/registry.js';
import type { StorageDriver } from '../../storage/types.js';
import type {
  BackupOpenOptions,
  BackupView,
  HypervisorDriver,
  MoveDiskResult,
  MoveDiskTarget,
  RestoreView,
  SecretValues,
  VmStats,
} from '../types.js';
import { QemuBackups } from './backup-capture.js';
import { SPARE_DIR_NAME } from './backup-daemon.js';
import { CGROUP_ROOT } from './cgroup.js';
import { assertQemuSafePath, type VmPaths } from './cmdline.js';
import { probeHostResources } from './cpu-pinning.js';
import { VmDiskOps } from './disk-ops.js';
import { hasDiskSlots } from './disk-slots.js';
import { DEFAULT_IMAGES_DIR, type QemuDriverOptions } from './driver-options.js';
import { GuestAgents } from './guest-agent.js';
import { QemuHostProbes } from './host-probes.js';
import { hasHotplugSlots } from './hotplug.js';
import { type VmIdentity, VmIds, vmIdsFile } from './identity.js';
import {
  assertQmpFdHelper,
  DEFAULT_QEMU_BINARY,
  DEFAULT_QEMU_USER,
  defaultLauncherPath,
  type QemuUser,
  qmpFdHelperBeside,
} from './launcher.js';
import { VmMigrations } from './migrate-vm.js';
import { type MoveDiskContext, moveVmDisk } from './move-disk.js';
import { passFileToVm } from './pass-fd.js';
import { VmAccessors } from './vm-accessors.js';
import { assertVmName, type CreateDeps, createVm, vmArgv } from './vm-create.js';
import { consoleTail, rotateVmLogs, VmLogWatch } from './vm-files.js';
import { VmHalt } from './vm-halt.js';
import { hotplugVm } from './vm-hotplug.js';
import { type LaunchDeps, launchVm } from './vm-launch.js';
import { listVmStats, listVms } from './vm-list.js';
import { VmProcesses } from './vm-process.js';
import { removeVm } from './vm-remove.js';
import type { StopOutcome } from './vm-stop.js';

export { DEFAULT_IMAGES_DIR, type QemuDriverOptions } from './driver-options.js';
/** How a stop ended (defined in vm-stop.ts). */
export type { StopOutcome } from './vm-stop.js';
/** What `config.json` in a VM's directory holds (defined in vm-store.ts). */
export type { StoredVm } from './vm-store.js';

/** Runs each VM's QEMU through build/vmlink-launch, jailed under the VM's own uid, detached from the agent. */
export class QemuDriver implements HypervisorDriver {
  private readonly runner: Runner;
  private readonly stateDir: string;
  private readonly imagesDir: string;
  private readonly launcher: string;
  private readonly qmpFdHelper: string;
  private readonly userName: string;
  private readonly qemuBinary: string;
  private readonly storage: StorageDriver;
  private readonly probes: QemuHostProbes;
  private readonly logWatch: VmLogWatch;
  /** Each VM's own uid/gid, recorded in `<stateDir>/vm-ids.json`. */
  readonly ids: VmIds;
  private readonly procs: VmProcesses;
  private readonly disks: VmDiskOps;
  /** The per-VM accessors the split-out modules share (vm-accessors.ts). */
  private readonly vms: VmAccessors;
  private readonly guests: GuestAgents;
  private readonly backups: QemuBackups;
  private readonly halt: VmHalt;

  constructor(private readonly opts: QemuDriverOptions) {
    this.runner = opts.runner;
    this.stateDir = resolve(opts.stateDir);
    this.imagesDir = opts.imagesDir ?? DEFAULT_IMAGES_DIR;
    this.launcher = opts.launcherPath ?? defaultLauncherPath();
    this.qmpFdHelper = opts.qmpFdHelperPath ?? qmpFdHelperBeside(this.launcher);
    this.userName = opts.qemuUser ?? DEFAULT_QEMU_USER;
    this.qemuBinary = opts.qemuBinary ?? DEFAULT_QEMU_BINARY;
    this.storage = opts.storage ?? storageDrivers.dir({ runner: opts.runner });
    this.ids = new VmIds({
      file: vmIdsFile(this.stateDir),
      ...(opts.vmIdRange ? { range: opts.vmIdRange } : {}),
      ...(opts.vmIdClaimsDir ? { claimsDir: opts.vmIdClaimsDir } : {}),
    });
    this.procs = new VmProcesses({
      runner: this.runner,
      userName: this.userName,
      qemuBinary: this.qemuBinary,
      ids: this.ids,
    });
    this.vms = new VmAccessors({
      runner: this.runner,
      stateDir: this.stateDir,
      qmpFdHelper: this.qmpFdHelper,
      procs: this.procs,
      ...(opts.netns ? { netns: opts.netns } : {}),
    });
    this.logWatch = new VmLogWatch(
      () => this.vms.names(),
      (n) => this.rotateLogs(n),
      opts.logCheckIntervalMs ?? VM_LOG_CHECK_INTERVAL_MS,
    );
    this.halt = new VmHalt(this.vms, () => this.probes.cgroupRoot());
    this.guests = new GuestAgents({
      socket: (name) => this.paths(name).qgaSocket,
      running: this.vms.running,
      locked: this.vms.locked,
    });
    this.migrations = new VmMigrations({
      ...this.vms,
      launchIncoming: (name, ctx, secrets) => this.launch(name, ctx, secrets, true),
    });
    this.probes = new QemuHostProbes({
      runner: this.runner,
      launcher: this.launcher,
      qemuBinary: this.qemuBinary,
      qemuUser: () => this.qemuUser(),
      ...(opts.accelerator ? { accelerator: opts.accelerator } : {}),
      ...(opts.confidentialRoot ? { confidentialRoot: opts.confidentialRoot } : {}),
      ...(opts.cgroupRoot ? { cgroupRoot: opts.cgroupRoot } : {}),
    });
    assertQemuSafePath(this.stateDir);
    assertQemuSafePath(this.imagesDir);
    const netns = opts.netns ? { netns: opts.netns } : {};
    this.disks = new VmDiskOps({ runner: this.runner, ...netns, ...this.vms });
    this.backups = new QemuBackups({
      runner: this.runner,
      ...netns,
      ...this.vms,
      spareRoot: join(this.stateDir, SPARE_DIR_NAME),
      nbd: opts.nbdServers ?? {
        start: (o) => startQemuNbd(this.runner, { ...o, ...(opts.netns ? { netns: opts.netns } : {}) }),
        stopLeft: async (dir, name) => {
          await stopQemuNbd(dir, name, opts.netns);
        },
      },
    });
  }

  // Host.

  /** The unprivileged user QEMU runs as; `UnsupportedError` ("run npm run setup") when missing. */
  qemuUser(): Promise<QemuUser> {
    return this.procs.qemuUser();
  }

  /** The ids VM `name`'s QEMU runs as (its own uid/gid, allocated and recorded on first use). */
  identity(name: string): Promise<VmIdentity> {
    return this.procs.identity(name);
  }

  accelerator(): Promise<Pick<HostCapabilities, 'accelerator' | 'acceleratorReason'>> {
    return this.probes.accelerator();
  }

  /** CPUs to pin to, CPU quotas and huge pages on this host (the report's `capabilities.resources`). */
  async hostResources(): Promise<HostResources> {
    const [resources, free] = await Promise.all([
      probeHostResources(await this.probes.cgroupRoot(), this.opts.cgroupRoot ?? CGROUP_ROOT),
      poolUsage(this.stateDir).then(
        (u) => u.freeMiB,
        () => undefined,
      ),
    ]);
    return free === undefined ? resources : { ...resources, vmDiskFreeMiB: free };
  }

  /** Which confidential-VM kinds this host can launch, each with the missing piece where it cannot. */
  confidential(): Promise<ConfidentialCapabilities> {
    return this.probes.confidential();
  }

  /** The command line of `cfg` on this host (vm-create.ts). */
  private argvOf(
    cfg: VmConfig,
    accel: 'kvm' | 'tcg',
    nicSlots: readonly number[] | undefined,
    diskSlots?: readonly number[],
  ): Promise<string[]> {
    const d = {
      paths: this.paths(cfg.name),
      imagesDir: this.imagesDir,
      qemuBinary: this.qemuBinary,
      confidentialHost: () => this.probes.confidentialHost(),
    };
    return vmArgv(d, cfg, accel, nicSlots, diskSlots);
  }

  async adopt(): Promise<void> {
    await this.adoptVms();
  }

  /** Connects to every VM that still runs (pidfile + QMP) and keeps the connection; starts and kills nothing. Returns their names. */
  async adoptVms(): Promise<string[]> {
    this.logWatch.start();
    const adopted: string[] = [];
    for (const name of await this.vms.names()) {
      const pid = await this.vms.livePid(name);
      if (pid === undefined) continue;
      try {
        await this.vms.qmp(name);
        adopted.push(name);
      } catch (e) {
        log.warn({ vm: name, pid, err: (e as Error).message }, 'adopt: QMP not answering; VM left running');
      }
    }
    // What a backup cut short by the previous agent's death left: fleece nodes, exports, a half-made bitmap.
    await this.backups
      .adoptSpare()
      .catch((e: Error) => log.warn({ err: e.message }, 'adopt: backup spare cleanup failed'));
    for (const name of await this.vms.names())
      await this.backupCleanup(name).catch((e: Error) =>
        log.warn({ vm: name, err: e.message }, 'adopt: backup cleanup failed'),
      );
    return adopted;
  }

  /** Closes the driver's QMP connections (QEMU keeps running) and stops the backup spare daemon. */
  async close(): Promise<void> {
    this.logWatch.stop();
    this.vms.closeAll();
    // The spare storage daemon (backup-spare.ts) holds no image; it goes with the agent.
    await this.backups.close();
  }

  // VMs.

  /** Paths of a VM's files. */
  paths(name: string): VmPaths {
    return this.vms.paths(name);
  }

  async create(cfg: VmConfig, configHash: string, ctx?: OpContext, secrets?: SecretValues): Promise<void> {
    assertVmName(cfg);
    const d: CreateDeps = {
      vms: this.vms,
      runner: this.runner,
      stateDir: this.stateDir,
      storage: this.storage,
      imagesDir: this.imagesDir,
      qemuUserName: this.userName,
      accelerator: () => this.accelerator(),
      argvOf: this.argvOf.bind(this),
    };
    await this.vms.locked(cfg.name, () => createVm(d, cfg, configHash, ctx, secrets));
  }

  /** Whether VM `name` runs with NIC and disk hot-plug slots (VMs started by an older vmlink need one restart). */
  async canHotplug(name: string): Promise<boolean> {
    const vm = await this.vms.stored(name);
    return (
      vm !== undefined &&
      hasHotplugSlots(vm.argv, this.paths(name)) &&
      hasDiskSlots(vm.argv) &&
      (await this.vms.livePid(name)) !== undefined
    );
  }

  /** Plugs and unplugs NICs and disks of running VM `cfg.name` so that it matches `cfg` (`secrets`: new disks'). */
  async hotplug(cfg: VmConfig, configHash: string, ctx?: OpContext, secrets?: SecretValues): Promise<void> {
    const name = cfg.name;
    await this.vms.locked(name, async () => {
      const vm = await this.vms.mustStored(name);
      if (vm.configHash === configHash) return;
      if ((await this.vms.livePid(name)) === undefined)
        throw new InvalidStateError(`hot-plug requires running: VM ${name} is not running`, `vm/${name}`);
      assertQmpFdHelper(this.qmpFdHelper);
      const id = await this.identity(name);
      await hotplugVm(
        {
          runner: this.runner,
          paths: this.paths(name),
          qmp: await this.vms.qmp(name),
          fdChannel: this.vms.fdChannel(name),
          storage: this.storage,
          owner: { uid: id.uid, gid: id.gid },
          identity: async () => id,
          guestExec: (argv, o) => this.guestExec(name, argv, o),
          writeStored: (stored) => this.vms.writeStored(name, stored),
          argvOf: (c, accel, slots, disks) => this.argvOf(c, accel, slots, disks),
          unplugTimeoutMs: this.opts.unplugTimeoutMs ?? NIC_UNPLUG_TIMEOUT_MS,
        },
        vm,
        cfg,
        configHash,
        secrets,
        ctx,
      );
    });
  }

  /**
   * Hands running VM `name` a file it could not open itself (outside its jail, not its uid's): root opens `path`
   * (never through a link) and adds it to a new QEMU fd set; `commands(fdsetPath)` (say a `blockdev-add` with
   * `filename: fdsetPath`) run right after on the same monitor. Returns the fd set's path.
   */
  async passFile(
    name: string,
    path: string,
    opts: { readOnly: boolean },
    commands: (fdsetPath: string) => Array<Record<string, unknown>> = () => [],
  ): Promise<string> {
    return this.vms.locked(name, async () => {
      if ((await this.vms.livePid(name)) === undefined)
        throw new InvalidStateError(
          `passing a file requires running: VM ${name} is not running`,
          `vm/${name}`,
        );
      assertQmpFdHelper(this.qmpFdHelper);
      return passFileToVm(this.vms.fdChannel(name), await this.vms.qmp(name), path, opts, commands);
    });
  }

  async start(name: string, ctx?: OpContext, secrets?: SecretValues): Promise<void> {
    await this.launch(name, ctx, secrets, false);
  }

  /** Starts a created VM; `incoming`: paused, waiting for a live migration's stream (vm-launch.ts). */
  private launch(
    name: string,
    ctx: OpContext | undefined,
    secrets: SecretValues | undefined,
    incoming: boolean,
  ): Promise<void> {
    const d: LaunchDeps = {
      vms: this.vms,
      runner: this.runner,
      ...(this.opts.netns ? { netns: this.opts.netns } : {}),
      launcher: this.launcher,
      qmpFdHelper: this.qmpFdHelper,
      imagesDir: this.imagesDir,
      qemuBinary: this.qemuBinary,
      startTimeoutMs: this.opts.startTimeoutMs ?? VM_START_TIMEOUT_MS,
      argvOf: (c, accel, nics, disks) => this.argvOf(c, accel, nics, disks),
      rotateLogs: (n) => this.rotateLogs(n),
      cgroupRoot: () => this.probes.cgroupRoot(),
      watchLogs: () => this.logWatch.start(),
      forceStop: (n) => this.halt.stopLocked(n, { force: true }),
    };
    return this.vms.locked(name, () => launchVm(d, name, ctx, secrets, incoming));
  }

  async stop(name: string, opts: { force: boolean; timeoutMs?: number }, ctx?: OpContext): Promise<void> {
    await this.stopVm(name, opts, ctx);
  }

  /** `stop`, saying how the VM stopped (ACPI powerdown, QMP quit, SIGKILL) and how long it took. */
  async stopVm(
    name: string,
    opts: { force: boolean; timeoutMs?: number },
    ctx?: OpContext,
  ): Promise<StopOutcome> {
    return this.vms.locked(name, async () => {
      await this.vms.mustStored(name);
      return this.halt.stopLocked(name, opts, ctx);
    });
  }

  /** Fences VM `name` at once (vm-halt.ts); false when it was not running. */
  kill(name: string): Promise<boolean> {
    return this.halt.kill(name);
  }

  async delete(name: string, ctx?: OpContext): Promise<void> {
    const stop = () => this.halt.stopLocked(name, { force: true }, ctx);
    await this.vms.locked(name, () => removeVm(name, this.paths(name), stop, (n) => this.ids.free(n), ctx));
  }

  /** Live migration (migrate-vm.ts). */
  readonly migrations: VmMigrations;

  /** Moves VM `name`'s disk to a new volume in a dir pool of this host: live while it runs (move-disk.ts). */
  moveDisk(name: string, disk: string, to: MoveDiskTarget, ctx?: MoveDiskContext): Promise<MoveDiskResult> {
    return this.vms.locked(name, () =>
      moveVmDisk({ vms: this.vms, storage: this.storage, runner: this.runner }, name, disk, to, ctx),
    );
  }

  // Disks: online resize, whole-VM snapshots, open disks (disk-ops.ts).
  readonly resizeDisk: VmDiskOps['resizeDisk'] = (...a) => this.disks.resizeDisk(...a);
  readonly snapshot: VmDiskOps['snapshot'] = (...a) => this.disks.snapshot(...a);
  readonly rollback: VmDiskOps['rollback'] = (...a) => this.disks.rollback(...a);
  readonly deleteSnapshot: VmDiskOps['deleteSnapshot'] = (...a) => this.disks.deleteSnapshot(...a);
  readonly snapshots: VmDiskOps['snapshots'] = (...a) => this.disks.snapshots(...a);
  readonly openDisks: VmDiskOps['openDisks'] = (...a) => this.disks.openDisks(...a);

  // Backups (backup-capture.ts).
  backupOpen(
    name: string,
    opts: BackupOpenOptions,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<BackupView> {
    return this.backups.backupOpen(name, opts, ctx, secrets);
  }

  restoreOpen(name: string, ctx?: OpContext, secrets?: SecretValues): Promise<RestoreView> {
    return this.backups.restoreOpen(name, ctx, secrets);
  }

  backupCleanup(name: string): Promise<void> {
    return this.backups.backupCleanup(name);
  }

  /** Every VM as observed now (vm-list.ts). */
  list(): Promise<ObservedVm[]> {
    return listVms(this.vms, () => this.probes.cgroupRoot());
  }

  vmStats(): Promise<VmStats[]> {
    return listVmStats(this.vms);
  }

  async config(name: string): Promise<VmConfig | undefined> {
    return (await this.vms.stored(name))?.config;
  }

  // Guest.

  /** Waits until the guest agent answers `guest-sync`; returns the time it took. */
  waitForGuestAgent(name: string, timeoutMs = GUEST_AGENT_BOOT_TIMEOUT_MS): Promise<number> {
    return this.guests.waitReady(name, timeoutMs);
  }
  readonly guestExec: GuestAgents['exec'] = (...a) => this.guests.exec(...a);
  readonly guestInterfaces: GuestAgents['interfaces'] = (...a) => this.guests.interfaces(...a);

  consolePath(name: string): string {
    return this.paths(name).consoleSocket;
  }

  /** The last `maxBytes` of VM `name`'s console log (its rotated part first); links and FIFOs are refused. */
  consoleTail(name: string, maxBytes: number): Promise<string> {
    return consoleTail(this.paths(name), maxBytes);
  }

  /** Rotates VM `name`'s console and QEMU logs past the cap; returns the logs it rotated. */
  rotateLogs(name: string): Promise<string[]> {
    return rotateVmLogs(name, this.paths(name), this.opts.logMaxBytes ?? VM_LOG_MAX_BYTES);
  }
}

export { processMatches } from './vm-process.js';
