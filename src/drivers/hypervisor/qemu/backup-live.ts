// A running VM's backup view (docs/backup.md "Capture"): per disk a fleece overlay whose backing is the live disk,
// then ONE QMP transaction that starts a `blockdev-backup sync=none` job into each overlay (copy-before-write: a guest
// write first copies the old block into the overlay), adds the new dirty bitmap and disables the base one, with the
// guest's filesystems frozen around it when its agent answers; then QEMU's own NBD server exports each overlay with
// the base bitmap. QEMU 7.2 inserts the copy-before-write filter itself for such a job; the manual filter with a
// `snapshot-access` node would need the device re-parented (no `blockdev-replace` in 7.2) and is not transactional.
// Teardown (commit, abort, and the cleanup after an agent crash) undoes it all by the fixed ids of backup-disks.ts.
import { rm } from 'node:fs/promises';
import {
  BadResponseError,
  InvalidStateError,
  TimeoutError,
  UnsupportedError,
} from '../../../shared/errors.js';
import { BACKUP_TEARDOWN_WAIT_MS, VM_DISK_QMP_TIMEOUT_MS } from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import { sleep } from '../../../shared/time.js';
import type { BackupOpenOptions, BackupView, BackupViewDisk } from '../types.js';
import {
  BACKUP_FDSETS,
  BACKUP_ID_PREFIX,
  type BackupDisk,
  backupSocket,
  checkBitmapNames,
  fleeceIds,
  type ViewRecord,
  viewDisk,
} from './backup-disks.js';
import type { VmPaths } from './cmdline.js';
import { fdsetFile, type QmpCommand } from './disk-sources.js';
import type { QmpClient } from './qmp.js';

/** The guest agent's part in a frozen cut. */
export interface GuestFreezer {
  /** `guest-fsfreeze-freeze` (bounded); throws when the agent does not answer or cannot freeze. */
  freeze(): Promise<void>;
  /** `guest-fsfreeze-thaw`; harmless when nothing is frozen. */
  thaw(): Promise<void>;
}

/** What a running VM's backup view needs of the driver (faked in the golden tests). */
export interface LiveBackupDeps {
  vm: string;
  qmp: Pick<QmpClient, 'execute'>;
  paths: VmPaths;
  /**
   * Creates an empty qcow2 of `bytes` at `path` (a new file, root's, mode 0600; never through a link). `encrypted`:
   * LUKS inside under a fresh random key, returned (base64) for QEMU alone: the fleece of an encrypted disk holds
   * its old blocks, which must not rest on the host in plaintext.
   */
  createOverlay(path: string, bytes: number, encrypted: boolean): Promise<string | undefined>;
  /** Opens `path` read-write as root into QEMU's fd set `fdset`, then runs `commands` on that monitor. */
  passFile(path: string, fdset: number, commands: QmpCommand[]): Promise<void>;
  removeFile(path: string): Promise<void>;
  guest?: GuestFreezer;
  record: { write(r: ViewRecord): Promise<void>; remove(): Promise<void> };
  now?: () => Date;
  /** How long teardown waits for exports and jobs to go, and how often it looks. */
  waitMs?: number;
  pollMs?: number;
}

/** A dirty bitmap as `query-named-block-nodes` lists it. */
export interface BitmapInfo {
  recording: boolean;
  busy: boolean;
  inconsistent: boolean;
  persistent: boolean;
}

/** One block node as far as a backup reads it. */
export interface NodeInfo {
  sizeBytes: number;
  bitmaps: Map<string, BitmapInfo>;
}

/** The VM's named block nodes (`query-named-block-nodes flat`): after a cut, `query-block` shows the filter instead. */
export async function queryNodes(qmp: Pick<QmpClient, 'execute'>): Promise<Map<string, NodeInfo>> {
  const r = await qmp.execute<unknown>('query-named-block-nodes', { flat: true }, VM_DISK_QMP_TIMEOUT_MS);
  if (!Array.isArray(r)) throw new BadResponseError('QMP query-named-block-nodes: not a list');
  const out = new Map<string, NodeInfo>();
  for (const n of r as Array<Record<string, unknown>>) {
    const name = n?.['node-name'];
    if (typeof name !== 'string' || name.startsWith('#')) continue;
    const size = (n.image as { 'virtual-size'?: unknown } | undefined)?.['virtual-size'];
    const bitmaps = new Map<string, BitmapInfo>();
    const list = Array.isArray(n['dirty-bitmaps'])
      ? (n['dirty-bitmaps'] as Array<Record<string, unknown>>)
      : [];
    for (const b of list) {
      if (typeof b?.name !== 'string') continue;
      bitmaps.set(b.name, {
        recording: b.recording === true,
        busy: b.busy === true,
        inconsistent: b.inconsistent === true,
        persistent: b.persistent === true,
      });
    }
    out.set(name, { sizeBytes: typeof size === 'number' ? size : 0, bitmaps });
  }
  return out;
}

/** What the driver composes into a `BackupView` (commit and abort run `teardownLive` under its lock). */
export interface OpenedLive extends Omit<BackupView, 'commit' | 'abort'> {
  record: ViewRecord;
}

/** Whether disk `d`'s view reads only what the base bitmap marks, or why it reads whole. */
export function changedOf(
  opts: Pick<BackupOpenOptions, 'full' | 'bitmaps'>,
  d: Pick<BackupDisk, 'qcow2'>,
  base: ViewRecord['disks'][number]['base'],
  stopped = false,
): BackupViewDisk['changed'] {
  if (opts.full) return { fullReason: 'forced' };
  if (opts.bitmaps.base === undefined) return { fullReason: 'first' };
  if (base === 'inconsistent') return { fullReason: 'bitmap-inconsistent' };
  if (base === 'absent')
    return { fullReason: stopped ? 'stopped-no-bitmap' : d.qcow2 ? 'no-bitmap' : 'not-persistent' };
  return { context: `qemu:dirty-bitmap:${opts.bitmaps.base}` };
}

/** The base bitmap's state on one node. */
/** What the base bitmap of one disk is good for: `usable`, `inconsistent` (read whole), `absent`; busy is refused. */
export function baseState(vm: string, disk: string, info: NodeInfo, base: string | undefined) {
  const b = base === undefined ? undefined : info.bitmaps.get(base);
  if (!b) return 'absent' as const;
  if (b.inconsistent) return 'inconsistent' as const;
  if (b.busy)
    throw new InvalidStateError(
      `VM ${vm}: disk ${disk}'s bitmap ${base} is in use (another backup, or a leftover export): run the agent's cleanup (restart it) and retry`,
      `vm/${vm}`,
    );
  return 'usable' as const;
}

/**
 * Opens the view: overlays, one transaction (frozen when asked and the guest agent answers), NBD exports. A failure
 * anywhere tears down what was made (the base bitmap keeps counting) and throws.
 */
export async function openLive(
  d: LiveBackupDeps,
  disks: readonly BackupDisk[],
  opts: BackupOpenOptions,
): Promise<OpenedLive> {
  const { vm, qmp } = d;
  const t = VM_DISK_QMP_TIMEOUT_MS;
  checkBitmapNames(vm, opts.bitmaps);
  if (disks.length === 0)
    throw new UnsupportedError(`VM ${vm} has no writable disk for a backup to read`, `vm/${vm}`);
  if (disks.length > BACKUP_FDSETS)
    throw new UnsupportedError(`VM ${vm}: a backup reads at most ${BACKUP_FDSETS} disks`, `vm/${vm}`);
  const { base, next } = opts.bitmaps;
  const nodes = await queryNodes(qmp);
  const sizes = new Map<string, number>();
  const record: ViewRecord = { version: 1, kind: 'running', ...(base ? { base } : {}), next, disks: [] };
  for (const x of disks) {
    const info = nodes.get(x.node);
    if (!info || info.sizeBytes <= 0)
      throw new InvalidStateError(`VM ${vm}: disk ${x.name} is not open in its QEMU`, `vm/${vm}`);
    if (info.bitmaps.has(next))
      throw new InvalidStateError(`VM ${vm}: disk ${x.name} already has a bitmap ${next}`, `vm/${vm}`);
    sizes.set(x.node, info.sizeBytes);
    record.disks.push(viewDisk(x, baseState(vm, x.name, info, base)));
  }
  // Written first: whatever follows, a crashed agent's successor knows what to undo.
  await d.record.write(record);
  let frozen = false;
  try {
    for (const x of disks) {
      const ids = fleeceIds(d.paths, x);
      await d.removeFile(ids.overlay);
      const key = await d.createOverlay(ids.overlay, sizes.get(x.node)!, x.encrypted);
      await d.passFile(ids.overlay, ids.fdset, [
        ...(key === undefined
          ? []
          : [
              {
                execute: 'object-add',
                arguments: { 'qom-type': 'secret', id: ids.secret, data: key, format: 'base64' },
              },
            ]),
        {
          execute: 'blockdev-add',
          arguments: { driver: 'file', 'node-name': ids.file, filename: fdsetFile(ids.fdset) },
        },
        {
          execute: 'blockdev-add',
          arguments: {
            driver: 'qcow2',
            'node-name': ids.node,
            file: ids.file,
            backing: x.node,
            ...(key === undefined ? {} : { encrypt: { format: 'luks', 'key-secret': ids.secret } }),
          },
        },
        // QEMU 7.2 answers qom-get of a secret's data: it goes once the node has read it.
        ...(key === undefined ? [] : [{ execute: 'object-del', arguments: { id: ids.secret } }]),
      ]);
    }
    let consistency: BackupView['consistency'] = 'crash-consistent';
    let consistencyNote: string | undefined;
    if (!opts.freeze) consistencyNote = 'freezing was not asked for';
    else if (!d.guest) consistencyNote = 'the VM has no guest agent to freeze its filesystems';
    const actions = transactionActions(d.paths, disks, record, opts);
    let at: Date;
    try {
      if (opts.freeze && d.guest) {
        frozen = true; // a freeze that timed out may still take effect: thaw whatever happened
        try {
          await d.guest.freeze();
          consistency = 'frozen';
        } catch (e) {
          consistencyNote = `the guest agent did not freeze the filesystems: ${(e as Error).message}`;
        }
      }
      await qmp.execute('transaction', { actions }, t);
      at = (d.now ?? (() => new Date()))();
    } finally {
      if (frozen) {
        frozen = false;
        await thaw(d);
      }
    }
    const socket = backupSocket(d.paths);
    await rm(socket, { force: true });
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } }, t);
    const out: BackupViewDisk[] = [];
    for (const [i, x] of disks.entries()) {
      const ids = fleeceIds(d.paths, x);
      const state = record.disks[i]!.base;
      const changed = changedOf(opts, x, state);
      await qmp.execute(
        'block-export-add',
        {
          type: 'nbd',
          id: ids.exportId,
          'node-name': ids.node,
          name: x.name,
          writable: false,
          ...('context' in changed ? { bitmaps: [base] } : {}),
        },
        t,
      );
      out.push({ name: x.name, sizeBytes: sizes.get(x.node)!, socket, exportName: x.name, changed });
    }
    return {
      consistency,
      ...(consistencyNote ? { consistencyNote } : {}),
      at,
      disks: out,
      record,
    };
  } catch (e) {
    if (frozen) await thaw(d);
    await teardownLive(d, record, 'abort').catch((err: Error) =>
      log.warn({ vm, err: err.message }, 'backup: teardown after a failed open failed'),
    );
    throw e;
  }
}

/** Thaws, retrying: a guest left frozen stops writing. */
async function thaw(d: LiveBackupDeps): Promise<void> {
  for (let i = 0; i < 3; i++) {
    try {
      await d.guest?.thaw();
      return;
    } catch (e) {
      log.error({ vm: d.vm, err: (e as Error).message, attempt: i + 1 }, 'backup: guest thaw failed');
      await sleep(200);
    }
  }
}

/** The cut: per disk the new bitmap, the base disabled (when usable), the fleecing job. One instant for all. */
export function transactionActions(
  paths: VmPaths,
  disks: readonly BackupDisk[],
  record: ViewRecord,
  opts: BackupOpenOptions,
): Array<{ type: string; data: Record<string, unknown> }> {
  const actions: Array<{ type: string; data: Record<string, unknown> }> = [];
  for (const [i, x] of disks.entries()) {
    const ids = fleeceIds(paths, x);
    actions.push({
      type: 'block-dirty-bitmap-add',
      data: { node: x.node, name: opts.bitmaps.next, persistent: x.qcow2 },
    });
    if (record.disks[i]!.base === 'usable')
      actions.push({ type: 'block-dirty-bitmap-disable', data: { node: x.node, name: opts.bitmaps.base } });
    actions.push({
      type: 'blockdev-backup',
      data: { 'job-id': ids.job, device: x.node, target: ids.node, sync: 'none' },
    });
  }
  return actions;
}

/**
 * Ends a view: exports, NBD server, jobs, fleece nodes, fd sets, overlay files, then the bitmaps. `commit`: the base
 * bitmap goes, `next` stays (it counts from this snapshot). `abort`: `next` is merged into the base, which counts
 * again, and `next` goes (without a usable base `next` just goes: the next backup reads whole anyway). Idempotent:
 * whatever is already gone is skipped.
 */
export async function teardownLive(
  d: LiveBackupDeps,
  record: ViewRecord,
  outcome: 'commit' | 'abort',
): Promise<void> {
  await teardownParts(
    d,
    record.disks.map((x) => fleeceIds(d.paths, x)),
  );
  const nodes = await queryNodes(d.qmp);
  const actions = bitmapActions(record, nodes, outcome);
  if (actions.length > 0) await d.qmp.execute('transaction', { actions }, VM_DISK_QMP_TIMEOUT_MS);
  await d.record.remove();
}

/** The bitmap changes that end a view (see `teardownLive`), as one transaction's actions. */
export function bitmapActions(
  record: ViewRecord,
  nodes: ReadonlyMap<string, NodeInfo>,
  outcome: 'commit' | 'abort',
): Array<{ type: string; data: Record<string, unknown> }> {
  const out: Array<{ type: string; data: Record<string, unknown> }> = [];
  for (const x of record.disks) {
    const info = nodes.get(x.node);
    if (!info) continue; // the disk was unplugged meanwhile: its bitmaps went with it
    const base = record.base === undefined ? undefined : info.bitmaps.get(record.base);
    const hasNext = info.bitmaps.has(record.next);
    if (outcome === 'commit') {
      if (base) out.push({ type: 'block-dirty-bitmap-remove', data: { node: x.node, name: record.base } });
      continue;
    }
    if (base && x.base === 'usable' && !base.inconsistent) {
      if (hasNext)
        out.push({
          type: 'block-dirty-bitmap-merge',
          data: { node: x.node, target: record.base, bitmaps: [record.next] },
        });
      if (!base.recording)
        out.push({ type: 'block-dirty-bitmap-enable', data: { node: x.node, name: record.base } });
    }
    if (hasNext) out.push({ type: 'block-dirty-bitmap-remove', data: { node: x.node, name: record.next } });
  }
  return out;
}

/** Removes the exports, the NBD server, the jobs, the fleece nodes, fd sets and overlays of `parts`. */
export async function teardownParts(d: LiveBackupDeps, parts: readonly FleeceIdsLike[]): Promise<void> {
  const { qmp } = d;
  const t = VM_DISK_QMP_TIMEOUT_MS;
  const ignore = () => {};
  if (parts.length === 0) return;
  const exportIds = new Set(parts.map((p) => p.exportId));
  const jobIds = new Set(parts.map((p) => p.job));
  const exports = await listIds(qmp, 'query-block-exports', 'id');
  for (const id of exports.filter((x) => exportIds.has(x)))
    await qmp.execute('block-export-del', { id, mode: 'hard' }, t).catch(ignore);
  await waitGone(d, 'NBD exports', () => listIds(qmp, 'query-block-exports', 'id'), exportIds);
  // vmlink runs QEMU's NBD server only for backups; it is not running when no backup is.
  await qmp.execute('nbd-server-stop', undefined, t).catch(ignore);
  const jobs = await listIds(qmp, 'query-block-jobs', 'device');
  for (const id of jobs.filter((x) => jobIds.has(x)))
    await qmp.execute('block-job-cancel', { device: id, force: true }, t).catch(ignore);
  await waitGone(d, 'fleecing jobs', () => listIds(qmp, 'query-block-jobs', 'device'), jobIds);
  const nodes = await queryNodes(qmp);
  for (const p of parts) {
    if (nodes.has(p.node)) await qmp.execute('blockdev-del', { 'node-name': p.node }, t);
    if (nodes.has(p.file)) await qmp.execute('blockdev-del', { 'node-name': p.file }, t);
  }
  const fdsets = await qmp.execute<Array<{ 'fdset-id': number }>>('query-fdsets', undefined, t);
  const sets = new Set(Array.isArray(fdsets) ? fdsets.map((f) => f['fdset-id']) : []);
  for (const p of parts) if (sets.has(p.fdset)) await qmp.execute('remove-fd', { 'fdset-id': p.fdset }, t);
  // An encrypted fleece's key, left when its open failed half-way (normally deleted right after the node opened).
  const objects = await qmp.execute<Array<{ name: string }>>('qom-list', { path: '/objects' }, t);
  const ids = new Set(Array.isArray(objects) ? objects.map((o) => o.name) : []);
  for (const p of parts) if (ids.has(p.secret)) await qmp.execute('object-del', { id: p.secret }, t);
  for (const p of parts) await d.removeFile(p.overlay);
  await rm(backupSocket(d.paths), { force: true });
}

/** What `teardownParts` needs of a disk's fleece ids. */
export type FleeceIdsLike = Pick<
  ReturnType<typeof fleeceIds>,
  'node' | 'file' | 'job' | 'exportId' | 'fdset' | 'overlay' | 'secret'
>;

async function listIds(qmp: Pick<QmpClient, 'execute'>, command: string, key: string): Promise<string[]> {
  const r = await qmp.execute<unknown>(command, undefined, VM_DISK_QMP_TIMEOUT_MS);
  if (!Array.isArray(r)) throw new BadResponseError(`QMP ${command}: not a list`);
  return (r as Array<Record<string, unknown>>)
    .map((x) => x?.[key])
    .filter((x): x is string => typeof x === 'string' && x.startsWith(BACKUP_ID_PREFIX));
}

async function waitGone(
  d: LiveBackupDeps,
  what: string,
  list: () => Promise<string[]>,
  ours: ReadonlySet<string>,
): Promise<void> {
  const deadline = Date.now() + (d.waitMs ?? BACKUP_TEARDOWN_WAIT_MS);
  for (;;) {
    const left = (await list()).filter((x) => ours.has(x));
    if (left.length === 0) return;
    if (Date.now() > deadline)
      throw new TimeoutError(
        `VM ${d.vm}: QEMU still has backup ${what} ${left.join(', ')} after ${d.waitMs ?? BACKUP_TEARDOWN_WAIT_MS} ms`,
        `vm/${d.vm}`,
      );
    await sleep(d.pollMs ?? 50);
  }
}

/**
 * What an agent that died mid-backup left in a running QEMU, found by name when no record says (the record's
 * absence is the normal case: then this finds nothing and sends nothing but three queries). A disabled vmlink
 * bitmap outside a view is a base whose `next` is unknown: it is removed, so the next backup reads whole rather
 * than miss what the guest wrote meanwhile.
 */
export async function scanLeftovers(
  d: LiveBackupDeps,
  disks: readonly BackupDisk[],
): Promise<{ parts: FleeceIdsLike[]; staleBitmaps: Array<{ node: string; name: string }> }> {
  const exports = await listIds(d.qmp, 'query-block-exports', 'id');
  const jobs = await listIds(d.qmp, 'query-block-jobs', 'device');
  const nodes = await queryNodes(d.qmp);
  const parts = disks
    .map((x) => fleeceIds(d.paths, x))
    .filter(
      (p) => exports.includes(p.exportId) || jobs.includes(p.job) || nodes.has(p.node) || nodes.has(p.file),
    );
  const staleBitmaps: Array<{ node: string; name: string }> = [];
  for (const x of disks)
    for (const [name, b] of nodes.get(x.node)?.bitmaps ?? [])
      if (name.startsWith(BACKUP_ID_PREFIX) && !b.recording) staleBitmaps.push({ node: x.node, name });
  return { parts, staleBitmaps };
}
