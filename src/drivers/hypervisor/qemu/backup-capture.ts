// The QEMU driver's backup operations (docs/backup.md "Capture"): `backupOpen` (a running VM through fleecing and
// QEMU's NBD server, backup-live.ts; a stopped one through one qemu-storage-daemon, backup-daemon.ts), `restoreOpen`
// (qemu-nbd, backup-offline.ts), and `backupCleanup` after an agent crash. One view per VM at a time; the VM's lock is held while a view opens or ends,
// not while the caller reads it.
import { randomBytes } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import type { Runner } from '../../../exec/runner.js';
import { InvalidStateError, UnsupportedError } from '../../../shared/errors.js';
import {
  BACKUP_FREEZE_CONNECT_TIMEOUT_MS,
  BACKUP_FREEZE_TIMEOUT_MS,
  VM_DISK_QMP_TIMEOUT_MS,
} from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import type { OpContext } from '../../../shared/op.js';
import { createRetryingLuks } from '../../storage/qemu-img.js';
import type { BackupOpenOptions, BackupView, RestoreView, SecretValues } from '../types.js';
import { openDaemon, stopLeftDaemon } from './backup-daemon.js';
import {
  type BackupDisk,
  backupDisks,
  readViewRecord,
  removeViewRecord,
  type ViewRecord,
  writeViewRecord,
} from './backup-disks.js';
import {
  type GuestFreezer,
  type LiveBackupDeps,
  openLive,
  scanLeftovers,
  teardownLive,
  teardownParts,
} from './backup-live.js';
import {
  foldOffline,
  type NbdServers,
  type OfflineDeps,
  offlineChap,
  offlineKeys,
  openRestore,
} from './backup-offline.js';
import { SpareDaemon } from './backup-spare.js';
import type { VmPaths } from './cmdline.js';
import { type FdChannel, passFile } from './pass-fd.js';
import { GuestAgentClient, type QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

/** What the backup operations need of the driver. */
export interface BackupCaptureHost {
  runner: Runner;
  netns?: string;
  paths(name: string): VmPaths;
  mustStored(name: string): Promise<StoredVm>;
  running(name: string): Promise<boolean>;
  qmp(name: string): Promise<QmpClient>;
  locked<T>(key: string, fn: () => Promise<T>): Promise<T>;
  fdChannel(name: string): FdChannel;
  /** `qemu-nbd` for stopped VMs and restores (absent: those are refused). */
  nbd?: NbdServers;
  /** Where the host's spare storage daemon lives (backup-spare.ts); absent: each stopped VM's backup starts one. */
  spareRoot?: string;
}

/** Backups of one driver's VMs. */
export class QemuBackups {
  /** VMs with a view open in this process (a backup or a restore). */
  private readonly open = new Set<string>();
  /** The host's spare storage daemon, taken by a stopped VM's next backup. */
  private readonly spare: SpareDaemon | undefined;

  constructor(private readonly h: BackupCaptureHost) {
    this.spare = h.spareRoot
      ? new SpareDaemon({ runner: h.runner, root: h.spareRoot, ...(h.netns ? { netns: h.netns } : {}) })
      : undefined;
  }

  /** The agent's start: stops the spare daemons an earlier agent left (the first is started by the first backup). */
  async adoptSpare(): Promise<void> {
    const n = await this.spare?.cleanup();
    if (n) log.info({ stopped: n }, 'backup: stopped the spare storage daemons an earlier agent left');
  }

  /** The agent's stop: no spare daemon outlives it. */
  async close(): Promise<void> {
    await this.spare?.close();
  }

  /** The spare daemon's pid while one is up (tests). */
  sparePid(): Promise<number | undefined> {
    return this.spare?.pid() ?? Promise.resolve(undefined);
  }

  /** Opens a point-in-time view of VM `name`'s disks (see `HypervisorDriver.backupOpen`). */
  async backupOpen(
    name: string,
    opts: BackupOpenOptions,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<BackupView> {
    return this.h.locked(name, async () => {
      const vm = await this.h.mustStored(name);
      this.claim(name);
      try {
        const paths = this.h.paths(name);
        const disks = backupDisks(vm.config, paths, vm.diskSlots);
        // Encrypted disks' keys, when sent: the bitmaps of an image nothing has open change only with its key.
        let keys: Map<string, string> | undefined;
        try {
          keys = offlineKeys(name, vm.config.disks, disks, secrets);
        } catch {}
        // A record without a view in this process: an earlier agent died mid-backup and nobody cleaned up.
        if (await readViewRecord(paths)) await this.cleanupLocked(name, keys);
        if (await this.h.running(name)) {
          ctx?.progress?.(`opening a backup view of ${disks.length} disk(s) of running VM ${name}`);
          const deps = await this.liveDeps(name);
          const o = await openLive(deps, disks, opts);
          const end = this.ender(name, async (outcome) => {
            try {
              await teardownLive(deps, o.record, outcome);
            } catch (e) {
              // QEMU stopped while the view was open (its fleece went with it): end the bitmaps in the images.
              if (await this.h.running(name)) throw e;
              await foldOffline(this.foldDeps(name, keys), o.record, outcome);
            }
          });
          const { record: _r, ...view } = o;
          return { ...view, commit: () => end('commit'), abort: () => end('abort') };
        }
        ctx?.progress?.(`serving ${disks.length} disk(s) of stopped VM ${name} read-only`);
        const deps = this.offlineDeps(
          name,
          offlineKeys(name, vm.config.disks, disks, secrets),
          offlineChap(name, disks, secrets),
        );
        const o = await openDaemon(this.spare ? { ...deps, spare: this.spare } : deps, disks, opts);
        const end = this.ender(name, (outcome) => o.end(outcome));
        return {
          consistency: 'stopped',
          at: new Date(),
          disks: o.disks,
          commit: () => end('commit'),
          abort: () => end('abort'),
        };
      } catch (e) {
        this.open.delete(name);
        throw e;
      }
    });
  }

  /** The stopped VM's disks writable over NBD for a restore. */
  async restoreOpen(name: string, ctx?: OpContext, secrets?: SecretValues): Promise<RestoreView> {
    return this.h.locked(name, async () => {
      const vm = await this.h.mustStored(name);
      if (await this.h.running(name))
        throw new InvalidStateError(`restore requires stopped: VM ${name} is running`, `vm/${name}`);
      this.claim(name);
      try {
        const paths = this.h.paths(name);
        const disks = backupDisks(vm.config, paths, vm.diskSlots);
        ctx?.progress?.(`serving ${disks.length} disk(s) of VM ${name} writable for a restore`);
        const keys = offlineKeys(name, vm.config.disks, disks, secrets);
        const { record: _r, ...deps } = this.offlineDeps(name, keys, offlineChap(name, disks, secrets));
        const view = await openRestore(deps, disks);
        let closed = false;
        return {
          disks: view.disks,
          close: async () => {
            if (closed) return;
            closed = true;
            try {
              await this.h.locked(name, () => view.close());
            } finally {
              this.open.delete(name);
            }
          },
        };
      } catch (e) {
        this.open.delete(name);
        throw e;
      }
    });
  }

  /** Undoes what a backup cut short by an agent crash left (see `HypervisorDriver.backupCleanup`). Idempotent. */
  async backupCleanup(name: string): Promise<void> {
    if (this.open.has(name)) return; // a view this process holds is its owner's to end
    await this.h.locked(name, () => this.cleanupLocked(name));
  }

  private async cleanupLocked(name: string, keys?: ReadonlyMap<string, string>): Promise<void> {
    const paths = this.h.paths(name);
    const vm = await this.h.mustStored(name);
    const record = await readViewRecord(paths);
    const disks = backupDisks(vm.config, paths, vm.diskSlots);
    if (await this.h.running(name)) {
      const deps = await this.liveDeps(name);
      if (record) {
        log.warn({ vm: name, next: record.next }, 'backup: undoing a backup view an earlier agent left');
        if (record.kind === 'stopped') await this.stopLeftServers(name, record);
        // The guest may have been left frozen by an agent that died between freeze and thaw.
        await deps.guest?.thaw().catch(() => {});
        await teardownLive(deps, { ...record, kind: 'running' }, 'abort');
        return;
      }
      const left = await scanLeftovers(deps, disks);
      if (left.parts.length === 0 && left.staleBitmaps.length === 0) return;
      log.warn({ vm: name, parts: left.parts.length }, 'backup: removing backup leftovers without a record');
      await teardownParts(deps, left.parts);
      if (left.staleBitmaps.length > 0)
        await deps.qmp.execute(
          'transaction',
          {
            actions: left.staleBitmaps.map((b) => ({ type: 'block-dirty-bitmap-remove', data: b })),
          },
          VM_DISK_QMP_TIMEOUT_MS,
        );
      return;
    }
    // A restore cut short leaves its writable qemu-nbd servers and no record, a backup cut short before its record
    // was written its storage daemon (no bitmap changed yet): they would keep the images open.
    if (!record) {
      await stopLeftDaemon(this.socketDir(name), this.h.netns);
      if (this.h.nbd) for (const x of disks) await this.h.nbd.stopLeft(this.socketDir(name), x.name);
      return;
    }
    log.warn(
      { vm: name, next: record.next },
      'backup: undoing a backup view an earlier agent left (VM stopped)',
    );
    if (record.kind === 'stopped') await this.stopLeftServers(name, record);
    await foldOffline(this.foldDeps(name, keys), record, 'abort');
  }

  /**
   * A stopped view's servers an earlier agent left: its storage daemon (SIGTERM: it stores the bitmaps as they are)
   * and any qemu-nbd of an agent before the daemon.
   */
  private async stopLeftServers(name: string, record: ViewRecord): Promise<void> {
    await stopLeftDaemon(this.socketDir(name), this.h.netns);
    if (this.h.nbd) for (const x of record.disks) await this.h.nbd.stopLeft(this.socketDir(name), x.name);
  }

  private foldDeps(name: string, keys?: ReadonlyMap<string, string>): Parameters<typeof foldOffline>[0] {
    const paths = this.h.paths(name);
    return {
      vm: name,
      ...(keys ? { keys } : {}),
      runner: this.h.runner,
      ...(this.h.netns ? { netns: this.h.netns } : {}),
      record: { write: (r: ViewRecord) => writeViewRecord(paths, r), remove: () => removeViewRecord(paths) },
    };
  }

  private claim(name: string): void {
    if (this.open.has(name))
      throw new InvalidStateError(`VM ${name} already has a backup or restore view open`, `vm/${name}`);
    this.open.add(name);
  }

  /** commit/abort of one view: once, under the VM's lock, then the VM is free for the next view. */
  private ender(
    name: string,
    fn: (outcome: 'commit' | 'abort') => Promise<void>,
  ): (outcome: 'commit' | 'abort') => Promise<void> {
    let ended: Promise<void> | undefined;
    return (outcome) => {
      ended ??= this.h.locked(name, () => fn(outcome)).finally(() => this.open.delete(name));
      return ended;
    };
  }

  private async liveDeps(name: string): Promise<LiveBackupDeps> {
    const paths = this.h.paths(name);
    const fd = this.h.fdChannel(name);
    return {
      vm: name,
      qmp: await this.h.qmp(name),
      paths,
      createOverlay: (path, bytes, encrypted) => this.createOverlay(path, bytes, encrypted),
      passFile: async (path, fdset, commands) => {
        await passFile(
          fd,
          path,
          { readOnly: false, fdset },
          commands.map((c) => JSON.stringify(c)),
        );
      },
      removeFile: (path) => rm(path, { force: true }),
      guest: this.freezer(name, paths.qgaSocket),
      record: { write: (r: ViewRecord) => writeViewRecord(paths, r), remove: () => removeViewRecord(paths) },
    };
  }

  private offlineDeps(
    name: string,
    keys?: ReadonlyMap<string, string>,
    chap?: ReadonlyMap<string, string>,
  ): OfflineDeps {
    if (!this.h.nbd)
      throw new UnsupportedError(
        `VM ${name} is stopped: serving its disks needs qemu-nbd support, which this agent lacks`,
        `vm/${name}`,
      );
    const paths = this.h.paths(name);
    return {
      vm: name,
      runner: this.h.runner,
      ...(this.h.netns ? { netns: this.h.netns } : {}),
      nbd: this.h.nbd,
      socketDir: this.socketDir(name),
      ...(keys ? { keys } : {}),
      ...(chap ? { chap } : {}),
      record: { write: (r: ViewRecord) => writeViewRecord(paths, r), remove: () => removeViewRecord(paths) },
    };
  }

  /** Root's directory in the VM's (root-owned) directory for qemu-nbd's sockets: no QEMU of the VM reaches it. */
  private socketDir(name: string): string {
    return `${this.h.paths(name).vmDir}/nbd`;
  }

  /**
   * An empty qcow2 of `bytes`: a new root-owned 0600 file (O_EXCL: never through a link), then qemu-img formats it;
   * `encrypted`: LUKS inside under a fresh random key (on qemu-img's stdin; returned for QEMU, kept nowhere else).
   * The key is random, not a passphrase: one PBKDF2 round's worth of time is enough.
   */
  private async createOverlay(path: string, bytes: number, encrypted: boolean): Promise<string | undefined> {
    const f = await open(path, 'wx', 0o600);
    await f.close();
    const create = ['qemu-img', 'create', '-q', '-f', 'qcow2', path, String(bytes)];
    if (!encrypted) {
      await this.h.runner.run(create);
      return undefined;
    }
    // LUKS takes a UTF-8 passphrase: 256 random bits as hex text, base64 for the secret object.
    const key = Buffer.from(randomBytes(32).toString('hex')).toString('base64');
    await createRetryingLuks(
      this.h.runner,
      ['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'encrypt.iter-time=10', path, String(bytes)],
      key,
      path,
    );
    return key;
  }

  /** The guest agent's freeze and thaw, each on its own short connection under the agent's per-VM queue. */
  private freezer(name: string, socket: string): GuestFreezer {
    const call = (command: string, timeoutMs: number) =>
      this.h.locked(`qga:${name}`, async () => {
        const c = await GuestAgentClient.connect(socket, {
          timeoutMs: BACKUP_FREEZE_CONNECT_TIMEOUT_MS,
          subject: `vm/${name}`,
        });
        try {
          await c.execute(command, undefined, timeoutMs);
        } finally {
          c.close();
        }
      });
    return {
      freeze: () => call('guest-fsfreeze-freeze', BACKUP_FREEZE_TIMEOUT_MS),
      thaw: () => call('guest-fsfreeze-thaw', BACKUP_FREEZE_TIMEOUT_MS),
    };
  }
}

export type { BackupDisk };
