// Moving a VM's disk to another dir pool on its host (`vmlink vm move-disk`). While the VM runs, without stopping
// it: a new qcow2 volume of the same size in the target pool, opened beside the disk (root opens the file, QEMU gets
// a descriptor), `blockdev-mirror` to it, and on READY `job-complete`: the device pivots to the new volume. Then the
// old nodes and file go, and the VM's stored config names the new source, so its next start opens it. The pivoted
// disk keeps its port and serial; it now sits on the slot's other set of node names (disk-slots.ts, ALT_SLOT).
// Any failure before the pivot cancels the mirror and removes the new volume: the guest never stops using its disk.
// While it is stopped (under the VM's lock, so it cannot start meanwhile): the image is copied by the storage
// driver (`qemu-img convert`, its dirty bitmaps kept), then the stored config names the copy, then the old file goes.
// Either way a disk with internal snapshots is refused: a move carries only its current state.
import { lstat, rm } from 'node:fs/promises';
import { z } from 'zod';
import type { Runner } from '../../../exec/runner.js';
import {
  ConflictError,
  InvalidRequestError,
  InvalidStateError,
  NotFoundError,
  UnsupportedError,
} from '../../../shared/errors.js';
import { VM_DISK_QMP_TIMEOUT_MS } from '../../../shared/limits.js';
import type { DiskConfig } from '../../../shared/model.js';
import type { DiskSource } from '../../../shared/storage.js';
import type { OpContext } from '../../network/types.js';
import { imageInfo } from '../../storage/qemu-img.js';
import type { StorageDriver } from '../../storage/types.js';
import type { MoveDiskResult, MoveDiskTarget } from '../types.js';
import {
  abortMirrors,
  awaitMirrorsReady,
  MIRROR_JOB_PREFIX,
  type MirrorProgress,
  type MirrorSpec,
  pivotMirror,
  startMirrors,
} from './block-mirror.js';
import { cleanupDisk } from './disk-attach.js';
import { diskSlotIds, otherSlot } from './disk-slots.js';
import { fdsetFile } from './disk-sources.js';
import { passFile } from './pass-fd.js';
import type { QmpClient } from './qmp.js';
import type { VmAccess } from './vm-access.js';
import type { StoredVm } from './vm-store.js';

/** How long a disk's copy may take to catch up before the move is given up (ms). */
export const MOVE_DISK_TIMEOUT_MS = 30 * 60_000;
/** Nodes read from one `query-named-block-nodes` answer at most. */
const NODES_MAX = 256;

/** A move's context: progress lines, and the copy's bytes as it goes. */
export type MoveDiskContext = OpContext & { onCopy?: (p: MirrorProgress) => void };

/** Internal snapshots listed per image at most (a longer list is cut; one is enough to refuse). */
const SNAPSHOTS_MAX = 1024;

const NodeSchema = z
  .object({
    'node-name': z.string().max(256),
    image: z
      .object({
        'virtual-size': z.number().int().nonnegative(),
        snapshots: z
          .array(z.object({ name: z.string().max(256) }).passthrough())
          .max(SNAPSHOTS_MAX)
          .optional(),
      })
      .passthrough()
      .optional(),
  })
  .passthrough();

/** The virtual size of node `node` (bytes) and the internal snapshots its image holds. */
export async function nodeImage(
  qmp: Pick<QmpClient, 'execute'>,
  node: string,
  vm: string,
): Promise<{ size: number; snapshots: string[] }> {
  const parsed = z
    .array(NodeSchema)
    .max(NODES_MAX)
    .safeParse(await qmp.execute('query-named-block-nodes', { flat: true }));
  const image = parsed.success ? parsed.data.find((n) => n['node-name'] === node)?.image : undefined;
  if (image === undefined)
    throw new InvalidStateError(`VM ${vm}: QEMU does not report disk node ${node}`, `vm/${vm}`);
  return { size: image['virtual-size'], snapshots: (image.snapshots ?? []).map((s) => s.name) };
}

/** The virtual size of node `node` (bytes). */
export async function virtualSize(
  qmp: Pick<QmpClient, 'execute'>,
  node: string,
  vm: string,
): Promise<number> {
  return (await nodeImage(qmp, node, vm)).size;
}

/** Refuses a disk whose image holds internal snapshots: a move would carry its current state only. */
function refuseSnapshots(vm: string, disk: string, snapshots: readonly string[]): void {
  if (!snapshots.length) return;
  const shown = snapshots.slice(0, 5).join(', ') + (snapshots.length > 5 ? ', ...' : '');
  throw new ConflictError(
    `VM ${vm}: disk ${disk} holds snapshot(s) ${shown}; a move carries only the disk's current state, so they would be lost: delete them first (\`vmlink vm snapshot-delete ${vm} SNAPSHOT\`)`,
    `vm/${vm}`,
  );
}

/** What moving needs from the driver (called under the VM's lock). */
export interface MoveDiskDeps {
  vms: VmAccess;
  storage: StorageDriver;
  /** Reads a stopped VM's image (`qemu-img info`). */
  runner: Runner;
  timeoutMs?: number;
}

/** The disk's index in the VM's config, refusing what cannot move (CD-ROMs, encrypted disks; read-only live). */
function movable(disks: readonly DiskConfig[], vm: string, disk: string, running: boolean): number {
  const i = disks.findIndex((d) => d.name === disk);
  if (i < 0) throw new NotFoundError('disk', `${vm}/${disk}`);
  const d = disks[i] as DiskConfig;
  if (d.media === 'cdrom')
    throw new InvalidRequestError(`VM ${vm}: disk ${disk} is a CD-ROM; nothing to move`, `vm/${vm}`);
  if (d.encryption)
    throw new UnsupportedError(
      `VM ${vm}: disk ${disk} is encrypted; moving an encrypted disk is not supported (the copy would need its key and LUKS)`,
      `vm/${vm}`,
    );
  if (d.readOnly && running)
    throw new UnsupportedError(
      `VM ${vm}: disk ${disk} is read-only; move its volume while the VM is stopped`,
      `vm/${vm}`,
    );
  return i;
}

/** Moves disk `disk` of VM `name` (running or stopped) to a new volume in `to`; see the file's comment. */
export async function moveVmDisk(
  d: MoveDiskDeps,
  name: string,
  disk: string,
  to: MoveDiskTarget,
  ctx?: MoveDiskContext,
): Promise<MoveDiskResult> {
  const vm = await d.vms.mustStored(name);
  const running = await d.vms.running(name);
  const i = movable(vm.config.disks, name, disk, running);
  const old = vm.config.disks[i] as DiskConfig;
  if (old.source && old.source.kind === 'file' && old.source.pool === to.pool)
    throw new InvalidRequestError(`VM ${name}: disk ${disk} is in pool ${to.pool} already`, `vm/${name}`);
  // A running VM's disk on iSCSI or NFS mirrors through QEMU's own driver; a stopped one's copy reads files only.
  if (!running && old.source && old.source.kind !== 'file')
    throw new UnsupportedError(
      `VM ${name}: disk ${disk} is on ${old.source.kind}; a stopped VM's disk moves only from a file (the VM directory or a dir pool): start the VM to move it live`,
      `vm/${name}`,
    );
  return running ? moveRunning(d, vm, i, to, ctx) : moveStopped(d, vm, i, to, ctx);
}

/** The stopped VM's disk copied into the target pool, the config switched to it, the old file removed. */
async function moveStopped(
  d: MoveDiskDeps,
  vm: StoredVm,
  i: number,
  to: MoveDiskTarget,
  ctx?: MoveDiskContext,
): Promise<MoveDiskResult> {
  const started = Date.now();
  const name = vm.config.name;
  const old = vm.config.disks[i] as DiskConfig;
  const disk = old.name;
  const oldPath = old.source?.kind === 'file' ? old.source.path : d.vms.paths(name).disk(disk);
  const format = old.source?.kind === 'file' ? old.source.format : 'qcow2';
  if (format !== 'qcow2' && format !== 'raw')
    throw new UnsupportedError(
      `VM ${name}: disk ${disk} is ${format}; only qcow2 and raw disks move`,
      `vm/${name}`,
    );
  const fromLabel = old.source ? `pool ${old.source.pool}` : 'the VM directory';
  // Unshared: a process that has the image open for writing (a backup's storage daemon) refuses the move here.
  const info = await imageInfo(d.runner, oldPath, format, ctx?.signal, false);
  refuseSnapshots(
    name,
    disk,
    (info.snapshots ?? []).map((s) => s.name),
  );
  ctx?.progress?.(`copying disk ${disk} of stopped VM ${name} from ${fromLabel} to pool ${to.pool}`);
  const path = await d.storage.copyVolume(
    { name: to.volume, dir: to.dir, source: oldPath, sourceFormat: format },
    ctx,
  );
  const source: DiskSource = { kind: 'file', pool: to.pool, volume: to.volume, path, format: 'qcow2' };
  try {
    const disks = vm.config.disks.map((x, k) => (k === i ? { ...x, source } : x));
    // The stored config first: from here the VM starts on the copy, and the old file is no one's.
    await d.vms.writeStored(name, { ...vm, config: { ...vm.config, disks } });
  } catch (e) {
    await removeRegularFile(path).catch(() => {});
    throw e;
  }
  await removeRegularFile(oldPath);
  // What the copy wrote: the new file's size (a flattened qcow2 holds the allocated data only).
  const copiedBytes = (await lstat(path).catch(() => undefined))?.size ?? 0;
  return { vm: name, disk, from: fromLabel, to: source, copiedBytes, ms: Date.now() - started };
}

/** The running VM's disk mirrored into the target pool and pivoted to (the file's comment). */
async function moveRunning(
  d: MoveDiskDeps,
  vm: StoredVm,
  i: number,
  to: MoveDiskTarget,
  ctx?: MoveDiskContext,
): Promise<MoveDiskResult> {
  const started = Date.now();
  const vms = d.vms;
  const name = vm.config.name;
  const old = vm.config.disks[i] as DiskConfig;
  const disk = old.name;
  const slots = vm.diskSlots ?? vm.config.disks.map((_, k) => k);
  const fromSlot = slots[i] ?? i;
  const toSlot = otherSlot(fromSlot);
  const from = diskSlotIds(fromSlot);
  const next = diskSlotIds(toSlot);
  const oldPath = old.source
    ? old.source.kind === 'file'
      ? old.source.path
      : undefined
    : vms.paths(name).disk(disk);
  const fromLabel = old.source ? `pool ${old.source.pool}` : 'the VM directory';
  const path = d.storage.volumePath({ name: to.volume, dir: to.dir });
  if (
    await lstat(path).then(
      () => true,
      () => false,
    )
  )
    throw new ConflictError(
      `volume ${to.volume} exists in pool ${to.pool} already; pick another name or delete it`,
      `vm/${name}`,
    );
  const qmp = await vms.qmp(name);
  const image = await nodeImage(qmp, from.node, name);
  refuseSnapshots(name, disk, image.snapshots);
  const sizeMiB = Math.ceil(image.size / (1024 * 1024));
  const spec: MirrorSpec = { job: `${MIRROR_JOB_PREFIX}${from.node}`, source: from.node, target: next.node };
  const t = VM_DISK_QMP_TIMEOUT_MS;
  let made = false;
  let pivoted = false;
  try {
    // Root's file in root's pool: QEMU only ever gets its descriptor.
    ctx?.progress?.(`creating volume ${to.volume} (${sizeMiB} MiB) in pool ${to.pool}`);
    await d.storage.createVolume({ name: to.volume, dir: to.dir, sizeMiB }, ctx);
    made = true;
    await qmp.execute('remove-fd', { 'fdset-id': next.fdset }).catch(() => {});
    await passFile(vms.fdChannel(name), path, { readOnly: false, fdset: next.fdset }, [
      JSON.stringify({
        execute: 'blockdev-add',
        arguments: { driver: 'file', 'node-name': next.file, filename: fdsetFile(next.fdset) },
      }),
    ]);
    await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': next.node, file: next.file }, t);
    ctx?.progress?.(`copying disk ${disk} of VM ${name} from ${fromLabel} to pool ${to.pool}`);
    await startMirrors(qmp, [spec]);
    const p = await awaitMirrorsReady(qmp, [spec], {
      vm: name,
      timeoutMs: d.timeoutMs ?? MOVE_DISK_TIMEOUT_MS,
      ...(ctx?.onCopy ? { onProgress: ctx.onCopy } : {}),
    });
    await pivotMirror(qmp, spec, name, t);
    pivoted = true;
    const source: DiskSource = { kind: 'file', pool: to.pool, volume: to.volume, path, format: 'qcow2' };
    const disks = vm.config.disks.map((x, k) => (k === i ? { ...x, source } : x));
    const diskSlots = slots.map((s, k) => (k === i ? toSlot : s));
    // The stored config first: a crash from here on restarts the VM on the new volume, which holds the data.
    await vms.writeStored(name, { ...vm, config: { ...vm.config, disks }, diskSlots });
    // The old nodes (and fd set) are no one's now; the old file goes only after the pivot.
    for (const n of [from.node, from.file])
      await qmp.execute('blockdev-del', { 'node-name': n }, t).catch(() => {});
    await qmp.execute('remove-fd', { 'fdset-id': from.fdset }).catch(() => {});
    if (oldPath) await removeRegularFile(oldPath);
    return {
      vm: name,
      disk,
      from: fromLabel,
      to: source,
      copiedBytes: p.doneBytes,
      ms: Date.now() - started,
    };
  } catch (e) {
    if (!pivoted) {
      await abortMirrors(qmp, [spec], name);
      await cleanupDisk(qmp, next);
      if (made) await removeRegularFile(path).catch(() => {});
    }
    throw e;
  }
}

/** Removes a volume file; never follows a link (a link is removed itself), refuses a directory. */
async function removeRegularFile(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (st.isDirectory()) throw new InvalidStateError(`${path} is a directory, not a volume; left in place`);
  await rm(path, { force: true });
}
