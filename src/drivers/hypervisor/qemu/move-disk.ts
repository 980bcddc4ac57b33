// Moving a running VM's disk to another dir pool on its host without stopping it (`vmlink vm move-disk`): a new
// qcow2 volume of the same size in the target pool, opened beside the disk (root opens the file, QEMU gets a
// descriptor), `blockdev-mirror` to it, and on READY `job-complete`: the device pivots to the new volume. Then the
// old nodes and file go, and the VM's stored config names the new source, so its next start opens it. The pivoted
// disk keeps its port and serial; it now sits on the slot's other set of node names (disk-slots.ts, ALT_SLOT).
// Any failure before the pivot cancels the mirror and removes the new volume: the guest never stops using its disk.
import { lstat, rm } from 'node:fs/promises';
import { z } from 'zod';
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

/** How long a disk's copy may take to catch up before the move is given up (ms). */
export const MOVE_DISK_TIMEOUT_MS = 30 * 60_000;
/** Nodes read from one `query-named-block-nodes` answer at most. */
const NODES_MAX = 256;

/** A move's context: progress lines, and the copy's bytes as it goes. */
export type MoveDiskContext = OpContext & { onCopy?: (p: MirrorProgress) => void };

const NodeSchema = z
  .object({
    'node-name': z.string().max(256),
    image: z.object({ 'virtual-size': z.number().int().nonnegative() }).passthrough().optional(),
  })
  .passthrough();

/** The virtual size of node `node` (bytes). */
export async function virtualSize(
  qmp: Pick<QmpClient, 'execute'>,
  node: string,
  vm: string,
): Promise<number> {
  const parsed = z
    .array(NodeSchema)
    .max(NODES_MAX)
    .safeParse(await qmp.execute('query-named-block-nodes', { flat: true }));
  const size = parsed.success
    ? parsed.data.find((n) => n['node-name'] === node)?.image?.['virtual-size']
    : undefined;
  if (size === undefined)
    throw new InvalidStateError(`VM ${vm}: QEMU does not report disk node ${node}`, `vm/${vm}`);
  return size;
}

/** What moving needs from the driver (called under the VM's lock). */
export interface MoveDiskDeps {
  vms: VmAccess;
  storage: StorageDriver;
  timeoutMs?: number;
}

/** The disk's index in the VM's config, refusing what cannot move (CD-ROMs, encrypted disks). */
function movable(disks: readonly DiskConfig[], vm: string, disk: string): number {
  const i = disks.findIndex((d) => d.name === disk);
  if (i < 0) throw new NotFoundError('disk', `${vm}/${disk}`);
  const d = disks[i] as DiskConfig;
  if (d.media === 'cdrom')
    throw new InvalidRequestError(`VM ${vm}: disk ${disk} is a CD-ROM; nothing to move`, `vm/${vm}`);
  if (d.encryption)
    throw new UnsupportedError(
      `VM ${vm}: disk ${disk} is encrypted; moving an encrypted disk while it runs is not supported (stop the VM and copy the volume)`,
      `vm/${vm}`,
    );
  if (d.readOnly)
    throw new UnsupportedError(
      `VM ${vm}: disk ${disk} is read-only; move its volume while the VM is stopped`,
      `vm/${vm}`,
    );
  return i;
}

/** Moves disk `disk` of running VM `name` to a new volume in `to`; see the file's comment. */
export async function moveVmDisk(
  d: MoveDiskDeps,
  name: string,
  disk: string,
  to: MoveDiskTarget,
  ctx?: MoveDiskContext,
): Promise<MoveDiskResult> {
  const started = Date.now();
  const vms = d.vms;
  const vm = await vms.mustStored(name);
  if (!(await vms.running(name)))
    throw new InvalidStateError(
      `move-disk requires running: VM ${name} is not running (a stopped VM's volume can be copied)`,
      `vm/${name}`,
    );
  const i = movable(vm.config.disks, name, disk);
  const old = vm.config.disks[i] as DiskConfig;
  if (old.source && old.source.kind === 'file' && old.source.pool === to.pool)
    throw new InvalidRequestError(`VM ${name}: disk ${disk} is in pool ${to.pool} already`, `vm/${name}`);
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
  const sizeMiB = Math.ceil((await virtualSize(qmp, from.node, name)) / (1024 * 1024));
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
