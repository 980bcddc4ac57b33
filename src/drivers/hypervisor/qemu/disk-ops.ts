// Live and offline operations on a VM's disks: online resize (QMP block_resize), whole-VM snapshots (a QMP
// transaction, a snapshot-save job with RAM, or qemu-img while stopped), rollback, delete, list, and the disks a
// running QEMU has open (query-block) for verify.
import type { Runner } from '../../../exec/runner.js';
import {
  BadResponseError,
  InvalidRequestError,
  InvalidStateError,
  TimeoutError,
  UnsupportedError,
  VmlinkError,
} from '../../../shared/errors.js';
import {
  OPEN_DISK_TARGET_MAX_CHARS,
  QEMU_IMG_INFO_MAX_BYTES,
  VM_DISK_QMP_TIMEOUT_MS,
  VM_DISKS_MAX,
  VM_SNAPSHOT_JOB_TIMEOUT_MS,
} from '../../../shared/limits.js';
import type { DiskConfig } from '../../../shared/model.js';
import { type DiskSource, type ObservedSnapshot, POOL_FEATURE_REASONS } from '../../../shared/storage.js';
import { sleep } from '../../../shared/time.js';
import type { OpContext } from '../../network/types.js';
import type { OpenDisk } from '../types.js';
import type { VmPaths } from './cmdline.js';
import { diskSlotIds, ROOT_DISK_IDS } from './disk-slots.js';
import {
  commonSnapshots,
  type ImageSnapshotInfo,
  internalSnapshotTransaction,
  iscsiUrl,
  nfsUrl,
  SNAPSHOT_JOB_ID,
  type SnapshotDisk,
  snapshotDisks,
  snapshotJobArgs,
} from './disk-snapshots.js';
import { isReadOnly, redactUrlCredentials } from './disk-sources.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

const MiB = 1024 * 1024;
/** What qemu-img and QMP accept as a snapshot name without quoting trouble (the wire checks the same). */
const SNAPSHOT_NAME = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/;

/** What the disk operations need of the driver. */
export interface DiskOpsDeps {
  runner: Runner;
  netns?: string;
  paths: (name: string) => VmPaths;
  mustStored: (name: string) => Promise<StoredVm>;
  running: (name: string) => Promise<boolean>;
  qmp: (name: string) => Promise<QmpClient>;
  locked: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
}

/** One entry of QMP `query-block`, as far as vmlink reads it. */
interface BlockInfo {
  inserted?: {
    'node-name'?: unknown;
    file?: unknown;
    ro?: unknown;
    image?: { 'virtual-size'?: unknown; snapshots?: unknown };
  };
}

/** Disk operations of the QEMU driver (each under the VM's lock). */
export class VmDiskOps {
  constructor(private readonly d: DiskOpsDeps) {}

  /** Grows disk `disk` of running VM `name` to `sizeMiB` (never shrinks); the guest sees the new size at once. */
  resizeDisk(name: string, disk: string, sizeMiB: number, ctx?: OpContext): Promise<void> {
    return this.d.locked(name, async () => {
      const vm = await this.d.mustStored(name);
      const subject = `vm/${name}`;
      if (!(await this.d.running(name)))
        throw new InvalidStateError(`online resize requires running: VM ${name} is not running`, subject);
      const node = nodeOf(vm, disk);
      const d = vm.config.disks.find((x) => x.name === disk);
      const source = disk === 'root' ? vm.config.rootSource : d?.source;
      if (source?.kind === 'iscsi')
        throw new UnsupportedError(
          `VM ${name}: disk ${disk} is an iSCSI LUN: ${POOL_FEATURE_REASONS.iscsi?.onlineResize}`,
          subject,
        );
      if (d && isReadOnly(d))
        throw new InvalidRequestError(`VM ${name}: disk ${disk} is read-only and cannot grow`, subject);
      if (!Number.isInteger(sizeMiB) || sizeMiB < 1)
        throw new InvalidRequestError(`disk size must be a positive number of MiB, not ${sizeMiB}`, subject);
      const qmp = await this.d.qmp(name);
      const now = (await queryBlock(qmp)).find((b) => b.inserted?.['node-name'] === node);
      const bytes = now?.inserted?.image?.['virtual-size'];
      if (typeof bytes !== 'number')
        throw new InvalidStateError(`VM ${name}: disk ${disk} is not open in its QEMU`, subject);
      if (sizeMiB * MiB < bytes)
        throw new InvalidRequestError(
          `VM ${name}: disk ${disk} is ${Math.ceil(bytes / MiB)} MiB; a resize can only grow it, not shrink it to ${sizeMiB} MiB`,
          subject,
        );
      if (sizeMiB * MiB === bytes) return;
      ctx?.progress?.(`growing disk ${disk} of VM ${name} to ${sizeMiB} MiB`);
      await qmp.execute('block_resize', { 'node-name': node, size: sizeMiB * MiB }, VM_DISK_QMP_TIMEOUT_MS);
    });
  }

  /** Snapshots every writable qcow2 disk of VM `name` at one instant (and its RAM with `memory`). */
  async snapshot(name: string, snapshot: string, opts: { memory: boolean }, ctx?: OpContext): Promise<void> {
    checkName(name, snapshot);
    return this.d.locked(name, async () => {
      const vm = await this.d.mustStored(name);
      const disks = snapshotDisks(vm.config, this.d.paths(name), vm.diskSlots);
      if (await this.d.running(name)) {
        const qmp = await this.d.qmp(name);
        if ((await this.list(qmp, disks)).some((s) => s.name === snapshot))
          throw new InvalidStateError(`VM ${name} already has a snapshot ${snapshot}`, `vm/${name}`);
        ctx?.progress?.(`snapshotting ${disks.length} disk(s)${opts.memory ? ' and RAM' : ''} of VM ${name}`);
        if (opts.memory) await runJob(qmp, name, 'snapshot-save', snapshotJobArgs(disks, snapshot));
        else
          await qmp.execute(
            'transaction',
            internalSnapshotTransaction(disks, snapshot),
            VM_DISK_QMP_TIMEOUT_MS,
          );
        return;
      }
      if (opts.memory)
        throw new InvalidStateError(
          `a snapshot with memory requires running: VM ${name} is stopped (take a disks-only snapshot)`,
          `vm/${name}`,
        );
      offlineRefusal(name, disks);
      ctx?.progress?.(`snapshotting ${disks.length} disk(s) of stopped VM ${name}`);
      const done: SnapshotDisk[] = [];
      try {
        for (const d of disks) {
          await this.qemuImg(['snapshot', '-c', snapshot, d.image]);
          done.push(d);
        }
      } catch (e) {
        // All disks or none: a snapshot on some disks only is no VM snapshot.
        for (const d of done) await this.qemuImg(['snapshot', '-d', snapshot, d.image]).catch(() => {});
        throw e;
      }
    });
  }

  /** Restores every disk (and the RAM, when the snapshot saved it and the VM runs) to `snapshot`. */
  async rollback(name: string, snapshot: string, ctx?: OpContext): Promise<void> {
    checkName(name, snapshot);
    return this.d.locked(name, async () => {
      const vm = await this.d.mustStored(name);
      const disks = snapshotDisks(vm.config, this.d.paths(name), vm.diskSlots);
      if (await this.d.running(name)) {
        const qmp = await this.d.qmp(name);
        const found = (await this.list(qmp, disks)).find((s) => s.name === snapshot);
        if (!found) throw new InvalidRequestError(`VM ${name} has no snapshot ${snapshot}`, `vm/${name}`);
        if (!found.vmStateBytes)
          throw new InvalidStateError(
            `VM ${name}: snapshot ${snapshot} holds disks only; rolling back disks under a running guest would corrupt them: stop the VM first (or snapshot with --memory)`,
            `vm/${name}`,
          );
        ctx?.progress?.(`restoring VM ${name} (RAM and disks) to snapshot ${snapshot}`);
        await runJob(
          qmp,
          name,
          'snapshot-load',
          snapshotJobArgs(disks, snapshot, await vmstateNode(qmp, disks, snapshot)),
        );
        return;
      }
      offlineRefusal(name, disks);
      const have = await this.offlineList(disks);
      if (!have.some((s) => s.name === snapshot))
        throw new InvalidRequestError(`VM ${name} has no snapshot ${snapshot}`, `vm/${name}`);
      ctx?.progress?.(`restoring the disks of stopped VM ${name} to snapshot ${snapshot}`);
      for (const d of disks) await this.qemuImg(['snapshot', '-a', snapshot, d.image]);
    });
  }

  /** Deletes `snapshot` from every disk of VM `name` that has it. */
  async deleteSnapshot(name: string, snapshot: string, ctx?: OpContext): Promise<void> {
    checkName(name, snapshot);
    return this.d.locked(name, async () => {
      const vm = await this.d.mustStored(name);
      const disks = snapshotDisks(vm.config, this.d.paths(name), vm.diskSlots);
      ctx?.progress?.(`deleting snapshot ${snapshot} of VM ${name}`);
      if (await this.d.running(name)) {
        const qmp = await this.d.qmp(name);
        const blocks = await queryBlock(qmp);
        const holding = disks.filter((d) => snapshotsOf(blocks, d.node).some((s) => s.name === snapshot));
        if (holding.length === 0) return;
        await runJob(qmp, name, 'snapshot-delete', {
          'job-id': SNAPSHOT_JOB_ID,
          tag: snapshot,
          devices: holding.map((d) => d.node),
        });
        return;
      }
      offlineRefusal(name, disks);
      for (const d of disks) {
        const list = await this.imageSnapshots(d.image);
        if (list.some((s) => s.name === snapshot)) await this.qemuImg(['snapshot', '-d', snapshot, d.image]);
      }
    });
  }

  /** The VM's whole snapshots: those on every one of its snapshot-capable disks (none for a VM that cannot snapshot). */
  snapshots(name: string): Promise<ObservedSnapshot[]> {
    return this.d.locked(name, async () => {
      const vm = await this.d.mustStored(name);
      let disks: SnapshotDisk[];
      try {
        disks = snapshotDisks(vm.config, this.d.paths(name), vm.diskSlots);
      } catch (e) {
        if (e instanceof UnsupportedError) return [];
        throw e;
      }
      if (await this.d.running(name)) return this.list(await this.d.qmp(name), disks);
      return this.offlineList(disks);
    });
  }

  /** The disks running VM `name`'s QEMU has open, by disk name (root, seed, cdrom or `disks[].name`). */
  async openDisks(name: string): Promise<OpenDisk[]> {
    const vm = await this.d.mustStored(name);
    if (!(await this.d.running(name))) return [];
    const byNode = new Map<string, { disk: string; source?: DiskSource }>();
    byNode.set(ROOT_DISK_IDS.node, {
      disk: 'root',
      ...(vm.config.rootSource ? { source: vm.config.rootSource } : {}),
    });
    byNode.set('seed', { disk: 'seed' });
    vm.config.disks.forEach((d: DiskConfig, i) => {
      byNode.set(diskSlotIds(vm.diskSlots?.[i] ?? i).node, {
        disk: d.name,
        ...(d.source ? { source: d.source } : {}),
      });
    });
    const out: OpenDisk[] = [];
    for (const b of (await queryBlock(await this.d.qmp(name))).slice(0, VM_DISKS_MAX + 4)) {
      const node = b.inserted?.['node-name'];
      const known = typeof node === 'string' ? byNode.get(node) : undefined;
      if (!known) continue;
      const file = typeof b.inserted?.file === 'string' ? b.inserted.file : '';
      out.push({
        disk: known.disk,
        target: describeTarget(known.source, file),
        readOnly: b.inserted?.ro === true,
      });
    }
    return out;
  }

  private async list(qmp: QmpClient, disks: readonly SnapshotDisk[]): Promise<ObservedSnapshot[]> {
    const blocks = await queryBlock(qmp);
    return commonSnapshots(disks.map((d) => snapshotsOf(blocks, d.node)));
  }

  private async offlineList(disks: readonly SnapshotDisk[]): Promise<ObservedSnapshot[]> {
    const lists: ImageSnapshotInfo[][] = [];
    for (const d of disks) lists.push(await this.imageSnapshots(d.image));
    return commonSnapshots(lists);
  }

  private async imageSnapshots(image: string): Promise<ImageSnapshotInfo[]> {
    // -U: a stopped VM's disk may still be open in another process (a pool's own qemu-img); info only reads.
    const r = await this.qemuImg(['info', '-U', '--output=json', image], QEMU_IMG_INFO_MAX_BYTES);
    let info: unknown;
    try {
      info = JSON.parse(r);
    } catch {
      throw new BadResponseError(`qemu-img info ${image}: not JSON`);
    }
    const snaps = (info as { snapshots?: unknown }).snapshots;
    return Array.isArray(snaps) ? (snaps as ImageSnapshotInfo[]) : [];
  }

  private async qemuImg(args: string[], maxOutputBytes?: number): Promise<string> {
    // An nfs:// image is reached from the VM's network namespace, as its QEMU reaches it.
    const r = await this.d.runner.run(['qemu-img', ...args], {
      ...(this.d.netns ? { netns: this.d.netns } : {}),
      ...(maxOutputBytes ? { maxOutputBytes } : {}),
    });
    return r.stdout;
  }
}

function checkName(vm: string, snapshot: string): void {
  if (!SNAPSHOT_NAME.test(snapshot))
    throw new InvalidRequestError(
      `snapshot name ${JSON.stringify(snapshot.slice(0, 80))} must be 1-63 letters, digits, ., _ or -, starting with a letter or digit`,
      `vm/${vm}`,
    );
}

/** qemu-img cannot open an encrypted qcow2 without its key, which only a start brings: refuse, naming the disk. */
function offlineRefusal(vm: string, disks: readonly SnapshotDisk[]): void {
  const enc = disks.find((d) => d.encrypted);
  if (enc)
    throw new InvalidStateError(
      `VM ${vm} is stopped and disk ${enc.disk} is encrypted (its key is only at hand while the VM runs): start the VM and snapshot it running`,
      `vm/${vm}`,
    );
}

/** The node of disk `disk` of VM `vm` (`root` or a `disks[].name`). */
function nodeOf(vm: StoredVm, disk: string): string {
  if (disk === 'root') {
    if (vm.config.image.kind === 'test-guest')
      throw new InvalidRequestError(
        `VM ${vm.config.name} boots the test guest and has no root disk`,
        `vm/${vm.config.name}`,
      );
    return ROOT_DISK_IDS.node;
  }
  const i = vm.config.disks.findIndex((d) => d.name === disk);
  if (i < 0)
    throw new InvalidRequestError(`VM ${vm.config.name} has no disk ${disk}`, `vm/${vm.config.name}`);
  return diskSlotIds(vm.diskSlots?.[i] ?? i).node;
}

async function queryBlock(qmp: QmpClient): Promise<BlockInfo[]> {
  const r = await qmp.execute<unknown>('query-block', undefined, VM_DISK_QMP_TIMEOUT_MS);
  if (!Array.isArray(r)) throw new BadResponseError('QMP query-block: not a list');
  return r as BlockInfo[];
}

function snapshotsOf(blocks: readonly BlockInfo[], node: string): ImageSnapshotInfo[] {
  const s = blocks.find((b) => b.inserted?.['node-name'] === node)?.inserted?.image?.snapshots;
  return Array.isArray(s) ? (s as ImageSnapshotInfo[]) : [];
}

/** The node holding the RAM of `snapshot` (`snapshot-load` must be told). */
async function vmstateNode(
  qmp: QmpClient,
  disks: readonly SnapshotDisk[],
  snapshot: string,
): Promise<string> {
  const blocks = await queryBlock(qmp);
  const d = disks.find((x) =>
    snapshotsOf(blocks, x.node).some(
      (s) => s.name === snapshot && typeof s['vm-state-size'] === 'number' && s['vm-state-size'] > 0,
    ),
  );
  return (d ?? disks[0]!).node;
}

/** What a disk is open on, for verify: a pool volume by its path or URL (no credentials), else QEMU's file name. */
function describeTarget(source: DiskSource | undefined, file: string): string {
  const t =
    source?.kind === 'file'
      ? source.path
      : source?.kind === 'nfs'
        ? nfsUrl(source)
        : source?.kind === 'iscsi'
          ? iscsiUrl(source)
          : redactUrlCredentials(file);
  return t.slice(0, OPEN_DISK_TARGET_MAX_CHARS);
}

/** Runs a snapshot job to its end (polling query-jobs), dismisses it, and throws its error if it failed. */
async function runJob(
  qmp: QmpClient,
  vm: string,
  command: string,
  args: Record<string, unknown>,
): Promise<void> {
  // A job left concluded by an agent that died waiting would block the id.
  // While a job writes or reads the VM's RAM QEMU holds its main lock: the monitor answers when that part is done.
  const t = VM_DISK_QMP_TIMEOUT_MS;
  await qmp.execute('job-dismiss', { id: SNAPSHOT_JOB_ID }, t).catch(() => {});
  await qmp.execute(command, args, t);
  const deadline = Date.now() + VM_SNAPSHOT_JOB_TIMEOUT_MS;
  for (;;) {
    const jobs = await qmp.execute<Array<{ id: string; status: string; error?: string }>>(
      'query-jobs',
      undefined,
      t,
    );
    const job = Array.isArray(jobs) ? jobs.find((j) => j.id === SNAPSHOT_JOB_ID) : undefined;
    if (!job || job.status === 'concluded' || job.status === 'null') {
      await qmp.execute('job-dismiss', { id: SNAPSHOT_JOB_ID }, t).catch(() => {});
      if (job?.error)
        throw new VmlinkError('exec', `VM ${vm}: ${command} failed: ${String(job.error).slice(0, 500)}`, {
          subject: `vm/${vm}`,
        });
      return;
    }
    if (Date.now() > deadline)
      throw new TimeoutError(
        `VM ${vm}: ${command} did not finish within ${VM_SNAPSHOT_JOB_TIMEOUT_MS} ms`,
        `vm/${vm}`,
      );
    await sleep(100);
  }
}
