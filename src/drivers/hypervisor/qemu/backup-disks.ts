// Which of a VM's disks a backup reads, the QEMU ids a backup gives its parts (so that a crashed agent's leftovers
// can be found by name), and the record of an open backup view kept in the VM's root-owned directory. Pure, apart
// from reading and writing that record.
import { rm } from 'node:fs/promises';
import { z } from 'zod';
import { InvalidRequestError } from '../../../shared/errors.js';
import type { VmConfig } from '../../../shared/model.js';
import { readJsonFile, writeJsonFile } from '../../../shared/state-file.js';
import type { DiskSource } from '../../../shared/storage.js';
import type { VmPaths } from './cmdline.js';
import { diskSlotIds, ROOT_DISK_IDS } from './disk-slots.js';
import { iscsiUrl, nfsUrl } from './disk-snapshots.js';
import { isReadOnly } from './disk-sources.js';

/** Prefix of every QEMU id a backup creates (nodes, jobs, exports); `backupCleanup` looks for it. */
export const BACKUP_ID_PREFIX = 'vmlink-';
/** First QEMU fd set of the fleece overlays (one per disk, by position): above the launcher's, disks' and passFile's. */
export const BACKUP_FDSET_BASE = 400;
/** Fd sets a backup may use (a VM's disks and its root). */
export const BACKUP_FDSETS = 20;
/** A dirty bitmap vmlink makes (docs/backup.md: `vmlink-<policy>-<stamp>`); QEMU keeps names up to 1023 bytes. */
export const BITMAP_NAME = /^vmlink-[a-zA-Z0-9][a-zA-Z0-9._-]{0,120}$/;

/** One disk a backup reads. */
export interface BackupDisk {
  /** `root` or `disks[].name`. */
  name: string;
  /** Its format node in the running QEMU (`root`, `disk<slot>`). */
  node: string;
  /** Position among the VM's backup disks (its fleece's fd set). */
  index: number;
  /** A qcow2 image keeps persistent dirty bitmaps; raw and LUKS-over-raw volumes keep them only in memory. */
  qcow2: boolean;
  encrypted: boolean;
  /** What `qemu-nbd`/`qemu-img` open while the VM is stopped: a path on this host, or a URL (nfs, iscsi). */
  image: string;
  source?: DiskSource['kind'];
  /** The pool volume behind it: what a stopped VM's storage daemon or qemu-nbd opens (portal, export, CHAP user). */
  volume?: DiskSource;
}

/** QEMU ids and files of one disk's fleece (a running VM's backup view). */
export interface FleeceIds {
  /** The overlay's qcow2 node (its backing is the disk's node) and its protocol node. */
  node: string;
  file: string;
  /** The `blockdev-backup sync=none` job and the NBD export (`block-export-add` id). */
  job: string;
  exportId: string;
  fdset: number;
  /** The secret object of an encrypted fleece's key (deleted once the node is open). */
  secret: string;
  /** The overlay file, in the VM's root-owned directory (QEMU gets it as a descriptor). */
  overlay: string;
}

export function fleeceIds(paths: VmPaths, d: Pick<BackupDisk, 'node' | 'index'>): FleeceIds {
  return {
    node: `vmlink-fleece-${d.node}`,
    file: `vmlink-fleece-${d.node}-file`,
    job: `vmlink-backup-${d.node}`,
    exportId: `vmlink-backup-${d.node}`,
    fdset: BACKUP_FDSET_BASE + d.index,
    secret: `vmlink-fleece-${d.node}-key`,
    overlay: `${paths.vmDir}/backup-fleece-${d.node}.qcow2`,
  };
}

/** The unix socket of a running VM's NBD server during a backup (QEMU creates it in its run directory). */
export const backupSocket = (paths: VmPaths): string => `${paths.runDir}/backup-nbd.sock`;
/** The record of an open backup view (root's directory: QEMU cannot plant or change it). */
export const viewRecordPath = (paths: VmPaths): string => `${paths.vmDir}/backup-view.json`;

function sourceDisk(
  name: string,
  node: string,
  index: number,
  s: DiskSource,
  encrypted: boolean,
): BackupDisk {
  const image = s.kind === 'file' ? s.path : s.kind === 'nfs' ? nfsUrl(s) : iscsiUrl(s);
  const qcow2 = s.kind !== 'iscsi' && s.format === 'qcow2';
  return { name, node, index, qcow2, encrypted, image, source: s.kind, volume: s };
}

/**
 * The disks a backup of `cfg` reads, in order: its root (a qcow2 image's overlay, or its root volume) and every
 * writable disk. CD-ROMs and read-only disks never change (the spec has them again); the test guest has no root.
 */
export function backupDisks(
  cfg: VmConfig,
  paths: VmPaths,
  diskSlots: readonly number[] | undefined,
): BackupDisk[] {
  const out: BackupDisk[] = [];
  if (cfg.rootSource) out.push(sourceDisk('root', ROOT_DISK_IDS.node, 0, cfg.rootSource, false));
  else if (cfg.image.kind === 'qcow2')
    out.push({
      name: 'root',
      node: ROOT_DISK_IDS.node,
      index: 0,
      qcow2: true,
      encrypted: false,
      image: paths.rootDisk,
    });
  cfg.disks.forEach((d, i) => {
    if (isReadOnly(d)) return;
    const node = diskSlotIds(diskSlots?.[i] ?? i).node;
    const index = out.length;
    const encrypted = d.encryption !== undefined;
    out.push(
      d.source
        ? sourceDisk(d.name, node, index, d.source, encrypted)
        : { name: d.name, node, index, qcow2: true, encrypted, image: paths.disk(d.name) },
    );
  });
  return out;
}

/** Refuses bitmap names vmlink would not make (they reach QMP and qemu-img argv). */
export function checkBitmapNames(vm: string, bitmaps: { base?: string; next: string }): void {
  for (const b of [bitmaps.base, bitmaps.next]) {
    if (b !== undefined && !BITMAP_NAME.test(b))
      throw new InvalidRequestError(
        `VM ${vm}: dirty bitmap name ${JSON.stringify(b.slice(0, 80))} is not vmlink's (vmlink-<policy>-<stamp>)`,
        `vm/${vm}`,
      );
  }
  if (bitmaps.base === bitmaps.next)
    throw new InvalidRequestError(`VM ${vm}: the base and next bitmaps must differ`, `vm/${vm}`);
}

/** What became of the base bitmap on one disk when the view opened. */
export const BaseStates = ['usable', 'inconsistent', 'absent'] as const;

/** The record of an open view: what its teardown (or a cleanup after a crash) must undo. */
export const ViewRecordSchema = z
  .object({
    version: z.literal(1),
    kind: z.enum(['running', 'stopped']),
    base: z.string().regex(BITMAP_NAME).optional(),
    next: z.string().regex(BITMAP_NAME),
    disks: z
      .array(
        z
          .object({
            name: z.string().max(64),
            node: z.string().regex(/^[a-z][a-z0-9]{0,15}$/),
            index: z
              .number()
              .int()
              .min(0)
              .max(BACKUP_FDSETS - 1),
            image: z.string().max(4096).optional(),
            qcow2: z.boolean(),
            base: z.enum(BaseStates),
          })
          .strict(),
      )
      .max(BACKUP_FDSETS),
  })
  .strict();
export type ViewRecord = z.infer<typeof ViewRecordSchema>;

/**
 * One disk of a view's record: where qemu-img finds its bitmaps (should QEMU stop before the view ends, cleanup folds
 * them offline) and what its base bitmap was good for.
 */
export function viewDisk(x: BackupDisk, base: (typeof BaseStates)[number]): ViewRecord['disks'][number] {
  return { name: x.name, node: x.node, index: x.index, image: x.image, qcow2: x.qcow2, base };
}

export async function readViewRecord(paths: VmPaths): Promise<ViewRecord | undefined> {
  return readJsonFile(viewRecordPath(paths), ViewRecordSchema);
}

export function writeViewRecord(paths: VmPaths, r: ViewRecord): Promise<void> {
  return writeViewRecordFile(viewRecordPath(paths), r);
}

/** Writes a view's record to `path` (atomically, durable). */
export function writeViewRecordFile(path: string, r: ViewRecord): Promise<void> {
  return writeJsonFile(path, r, { mode: 0o600 });
}

export async function removeViewRecord(paths: VmPaths): Promise<void> {
  await rm(viewRecordPath(paths), { force: true });
}
