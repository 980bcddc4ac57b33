// Which of a VM's disks a whole-VM snapshot covers, and the QMP and qemu-img commands that take, restore, delete
// and list such snapshots. Pure (unit-tested); disk-ops.ts runs them.
import { UnsupportedError } from '../../../shared/errors.js';
import type { DiskConfig, VmConfig } from '../../../shared/model.js';
import { type DiskSource, type ObservedSnapshot, POOL_FEATURE_REASONS } from '../../../shared/storage.js';
import type { VmPaths } from './cmdline.js';
import { diskSlotIds, ROOT_DISK_IDS } from './disk-slots.js';
import { isReadOnly } from './disk-sources.js';

/** One qcow2 disk a VM snapshot covers. */
export interface SnapshotDisk {
  /** `root` or `disks[].name`. */
  disk: string;
  /** Its format node in QEMU. */
  node: string;
  /** What qemu-img opens while the VM is stopped: a path on this host, or an `nfs://` URL. */
  image: string;
  encrypted: boolean;
}

/** An `nfs://` URL of a volume on an export (no credentials: NFSv3 with AUTH_SYS has none). */
export function nfsUrl(s: Extract<DiskSource, { kind: 'nfs' }>): string {
  return `nfs://${s.server}${s.export.replace(/\/+$/, '')}/${s.file}`;
}

/** An `iscsi://` URL of a LUN, without its CHAP user or password. */
export function iscsiUrl(s: Extract<DiskSource, { kind: 'iscsi' }>): string {
  return `iscsi://${s.portal}/${s.iqn}/${s.lun}`;
}

/** What a pool volume is, for the snapshot rule: its image (path or URL), or why it cannot snapshot. */
function sourceImage(vm: string, disk: string, s: DiskSource): string {
  if (s.kind === 'iscsi')
    throw new UnsupportedError(
      `VM ${vm}: disk ${disk} is an iSCSI LUN, which cannot snapshot: ${POOL_FEATURE_REASONS.iscsi?.snapshots}`,
      `vm/${vm}`,
    );
  if (s.format !== 'qcow2')
    throw new UnsupportedError(
      `VM ${vm}: disk ${disk} is a ${s.format} volume, which cannot snapshot: snapshots need qcow2`,
      `vm/${vm}`,
    );
  return s.kind === 'file' ? s.path : nfsUrl(s);
}

/**
 * The disks a snapshot of VM `cfg` covers: its qcow2 root and every writable disk (CD-ROMs and read-only disks do
 * not change). Refuses, naming the disk, a VM with a disk that cannot snapshot (a raw iSCSI LUN or raw volume).
 */
export function snapshotDisks(
  cfg: VmConfig,
  paths: VmPaths,
  diskSlots: readonly number[] | undefined,
): SnapshotDisk[] {
  const out: SnapshotDisk[] = [];
  if (cfg.image.kind === 'qcow2')
    out.push({ disk: 'root', node: ROOT_DISK_IDS.node, image: paths.rootDisk, encrypted: false });
  if (cfg.rootSource)
    out.push({
      disk: 'root',
      node: ROOT_DISK_IDS.node,
      image: sourceImage(cfg.name, 'root', cfg.rootSource),
      encrypted: false,
    });
  cfg.disks.forEach((d: DiskConfig, i) => {
    if (isReadOnly(d)) return;
    out.push({
      disk: d.name,
      node: diskSlotIds(diskSlots?.[i] ?? i).node,
      image: d.source ? sourceImage(cfg.name, d.name, d.source) : paths.disk(d.name),
      encrypted: d.encryption !== undefined,
    });
  });
  if (out.length === 0)
    throw new UnsupportedError(`VM ${cfg.name} has no writable qcow2 disk to snapshot`, `vm/${cfg.name}`);
  return out;
}

/** The QMP transaction that snapshots `disks` at one instant (disks only; the guest keeps running). */
export function internalSnapshotTransaction(disks: readonly SnapshotDisk[], name: string) {
  return {
    actions: disks.map((d) => ({
      type: 'blockdev-snapshot-internal-sync',
      data: { device: d.node, name },
    })),
  };
}

/** QMP job id of vmlink's snapshot jobs (one at a time per VM: the driver's lock). */
export const SNAPSHOT_JOB_ID = 'vmlink-snapshot';

/** Arguments of `snapshot-save`/`snapshot-load`: RAM and device state in the first disk, every disk's state. */
export function snapshotJobArgs(disks: readonly SnapshotDisk[], tag: string, vmstate?: string) {
  return {
    'job-id': SNAPSHOT_JOB_ID,
    tag,
    vmstate: vmstate ?? disks[0]!.node,
    devices: disks.map((d) => d.node),
  };
}

/** One snapshot as QEMU (`query-block`) or qemu-img (`info --output=json`) lists it. */
export interface ImageSnapshotInfo {
  name?: unknown;
  'vm-state-size'?: unknown;
  'date-sec'?: unknown;
}

/**
 * The whole-VM snapshots among per-disk lists: those present on every disk, with the earliest time any disk took
 * it and the RAM saved with it (whichever disk holds that).
 */
export function commonSnapshots(perDisk: ReadonlyArray<readonly ImageSnapshotInfo[]>): ObservedSnapshot[] {
  if (perDisk.length === 0) return [];
  const byName = new Map<string, { seen: number; sec: number; vm: number }>();
  for (const list of perDisk) {
    const names = new Set<string>();
    for (const s of list) {
      if (typeof s.name !== 'string' || names.has(s.name)) continue;
      names.add(s.name);
      const sec = typeof s['date-sec'] === 'number' ? s['date-sec'] : 0;
      const vm = typeof s['vm-state-size'] === 'number' ? s['vm-state-size'] : 0;
      const e = byName.get(s.name);
      if (e) {
        e.seen++;
        e.sec = Math.min(e.sec, sec);
        e.vm = Math.max(e.vm, vm);
      } else byName.set(s.name, { seen: 1, sec, vm });
    }
  }
  return [...byName]
    .filter(([, e]) => e.seen === perDisk.length)
    .map(([name, e]) => ({
      name,
      createdAt: new Date(e.sec * 1000).toISOString(),
      ...(e.vm > 0 ? { vmStateBytes: e.vm } : {}),
    }))
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
}
