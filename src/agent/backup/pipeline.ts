// The data path of a backup and a restore (docs/backup.md): a disk cut in fixed-size chunks read over NBD, each named by
// its keyed id, the ones the store lacks sealed and uploaded; and back. Pure of hosts and HTTP: the disk view, the
// keys, the store side and the NBD connector are handed in, so this runs against a fake view, a real qemu-nbd, a
// local DirChunkStore or another agent's store alike.
import type { NbdConnection, NbdConnectOptions, NbdExtent } from '../../drivers/backup/types.js';
import type { BackupView, BackupViewDisk, RestoreView } from '../../drivers/hypervisor/types.js';
import {
  BACKUP_CHUNK_BYTES_NEW,
  BACKUP_IDS_PER_REQUEST_MAX,
  BACKUP_TRANSFER_CONCURRENCY,
  type ChunkId,
  chunkCountOf,
  type FullReadReason,
  isChunkSize,
  type Manifest,
  type ManifestDisk,
} from '../../shared/backup.js';
import { CorruptDataError, InvalidStateError, KeyMismatchError, VmlinkError } from '../../shared/errors.js';
import { mapLimited } from '../../shared/queue.js';
import { ChunkSender, type SentFigures } from './pipeline-send.js';

/** What the pipeline needs of a backup key (shared/backup-crypto.ts's BackupKeySet has it). */
export interface ChunkKeys {
  readonly fingerprint: string;
  chunkId(plain: Buffer): string;
  /** `out`: a buffer to build the blob in when it is large enough (the blob is then a view of it). */
  sealChunk(id: string, plain: Buffer, out?: Buffer): Buffer;
  /** CorruptDataError naming the chunk when the blob is damaged or not that chunk's. */
  openChunk(id: string, blob: Buffer): Buffer;
  /** KeyMismatchError / CorruptDataError when the manifest was not signed by this key or was changed. */
  verifyManifest(m: Manifest): void;
}

/**
 * The CPU work on chunks, which may run on other threads (seal-workers.ts): a buffer handed in may be moved away
 * (it then reads as empty); use the one given back.
 */
export interface ChunkCodec {
  /**
   * `plain`'s id. `home`: the whole buffer `plain` is a view of, from its start, owned by the caller: it moves whole
   * (not a copy of the view) and `plain` comes back as a view of it.
   */
  identify(plain: Buffer, home?: Buffer): Promise<{ id: string; plain: Buffer }>;
  seal(id: string, plain: Buffer): Promise<Buffer>;
  /**
   * `seal`, building the blob in `spare` when it is large enough (the blob is then a view of it), and giving back the
   * plain buffer when it came back from another thread (`plain`: its bytes unchanged): both for reuse. A `spare` that
   * holds `plain` at its start (the whole buffer it is a view of) seals in place: the blob overwrites the plaintext,
   * and no plain buffer comes back.
   */
  sealInto(id: string, plain: Buffer, spare?: Buffer): Promise<{ blob: Buffer; plain?: Buffer }>;
  open(id: string, blob: Buffer): Promise<Buffer>;
}

/** The codec that does the work on the caller's thread, with `keys` (small jobs, tests). */
export function inlineCodec(keys: ChunkKeys): ChunkCodec {
  return {
    identify: async (plain) => ({ id: keys.chunkId(plain), plain }),
    seal: async (id, plain) => keys.sealChunk(id, plain),
    sealInto: async (id, plain, spare) => {
      const blob = keys.sealChunk(id, plain, spare);
      return spare?.buffer === plain.buffer ? { blob } : { blob, plain };
    },
    open: async (id, blob) => keys.openChunk(id, blob),
  };
}

/** Where a backup's chunks go: a store (local) or a store's agent (StoreClient). */
export interface ChunkSink {
  /** Which of `ids` are lacking; present ones are touched (GC grace). At most BACKUP_IDS_PER_REQUEST_MAX ids. */
  missing(ids: ChunkId[]): Promise<ChunkId[]>;
  putChunk(id: ChunkId, blob: Buffer): Promise<boolean>;
}

/** Where a restore's chunks come from. */
export interface ChunkSource {
  getChunk(id: ChunkId): Promise<Buffer>;
}

/** Opens an NBD connection (drivers/backup/nbd-client.ts's `connectNbd`). */
export type NbdConnector = (opts: NbdConnectOptions) => Promise<NbdConnection>;

/** Bytes done of bytes to do, across all disks. */
export type Progress = (done: number, total: number) => void;

/** Chunks a restore holds at once (fetched, opened, being written): enough to keep the opening threads busy. */
const RESTORE_CHUNKS_IN_FLIGHT = 8;
/** Most bytes one block-status query covers. */
const STATUS_SPAN = 1024 * 1024 * 1024;

/** NBD `base:allocation`: the extent reads as zeroes. */
const NBD_STATE_ZERO = 2;
/** NBD `qemu:dirty-bitmap:*`: the extent was written since the bitmap started. */
const NBD_STATE_DIRTY = 1;

/** Bytes of chunk `i` of a disk of `size` cut at every `chunkBytes` (the last may be shorter). */
const chunkLength = (size: number, chunkBytes: number, i: number) =>
  Math.min(chunkBytes, size - i * chunkBytes);

/** The ids of all-zero chunks of each length, under one key. */
class ZeroIds {
  private readonly ids = new Map<number, string>();
  constructor(private readonly keys: ChunkKeys) {}
  id(length: number): string {
    let id = this.ids.get(length);
    if (!id) {
      id = this.keys.chunkId(Buffer.alloc(length));
      this.ids.set(length, id);
    }
    return id;
  }
  has(id: string): number | undefined {
    for (const [len, z] of this.ids) if (z === id) return len;
    return undefined;
  }
}

/** The extents of `context` over the whole disk, in order (the server may answer less than asked: ask on). */
async function extentsOf(nbd: NbdConnection, context: string, size: number): Promise<NbdExtent[]> {
  const out: NbdExtent[] = [];
  let at = 0;
  while (at < size) {
    const got = await nbd.blockStatus(context, at, Math.min(STATUS_SPAN, size - at));
    if (got.length === 0)
      throw new InvalidStateError(`NBD export ${nbd.exportName} answered no extents at ${at}`);
    for (const e of got) {
      if (e.offset !== at || e.length <= 0)
        throw new InvalidStateError(
          `NBD export ${nbd.exportName} answered extents out of order at ${at} (${e.offset}+${e.length})`,
        );
      const length = Math.min(e.length, size - at);
      out.push({ offset: at, length, flags: e.flags });
      at += length;
      if (at >= size) break;
    }
  }
  return out;
}

/** Indices of the chunks (of `chunkBytes`) `extents` with `flag` set touch. */
function chunksFlagged(extents: NbdExtent[], flag: number, chunkBytes: number): Set<number> {
  const out = new Set<number>();
  for (const e of extents) {
    if ((e.flags & flag) === 0) continue;
    const first = Math.floor(e.offset / chunkBytes);
    const last = Math.floor((e.offset + e.length - 1) / chunkBytes);
    for (let i = first; i <= last; i++) out.add(i);
  }
  return out;
}

/** Indices of chunks (of `chunkBytes`) wholly covered by zero extents. */
function zeroChunks(extents: NbdExtent[], size: number, chunkBytes: number): Set<number> {
  const nonZero = chunksFlagged(
    extents.map((e) => ({ ...e, flags: e.flags & NBD_STATE_ZERO ? 0 : 1 })),
    1,
    chunkBytes,
  );
  const out = new Set<number>();
  for (let i = 0; i < chunkCountOf(size, chunkBytes); i++) if (!nonZero.has(i)) out.add(i);
  return out;
}

/** `missing` over any number of ids, in batches the wire allows. */
async function missingOf(sink: ChunkSink, ids: ChunkId[]): Promise<Set<ChunkId>> {
  const unique = [...new Set(ids)];
  const out = new Set<ChunkId>();
  for (let i = 0; i < unique.length; i += BACKUP_IDS_PER_REQUEST_MAX)
    for (const id of await sink.missing(unique.slice(i, i + BACKUP_IDS_PER_REQUEST_MAX))) out.add(id);
  return out;
}

/** The base's chunks asked about ahead of a backup (`askBaseChunks`): which ids, and which of them the store lacks. */
export interface BaseChunksAsked {
  ids: ReadonlySet<ChunkId>;
  lost: Promise<Set<ChunkId>>;
}

/**
 * Asks `sink` which of `base`'s chunks it lacks (touching the others: GC grace), before the backup's view is open:
 * an incremental keeps most of them (at 1 MiB chunks a 2 GiB disk keeps ~2,000: 20-45 ms of calls here), and the
 * view's open mostly waits for a storage daemon or QEMU, so the caller starts this beside it and hands it to
 * `backupDisks`. Chunks the bitmap then marks dirty were asked for nothing (a touch is harmless).
 */
export function askBaseChunks(sink: ChunkSink, base: Manifest): BaseChunksAsked {
  const ids = new Set(base.disks.flatMap((d) => d.chunks));
  const lost = missingOf(sink, [...ids]);
  lost.catch(() => {}); // awaited by backupDisks; a failed open must not leave it unhandled
  return { ids, lost };
}

/** What one disk's plan is before reading. */
interface DiskPlan {
  disk: BackupViewDisk;
  /** Where this backup cuts the disk. */
  chunkBytes: number;
  mode: 'full' | 'incremental';
  fullReason?: FullReadReason;
  /** The context of changed blocks (incremental only). */
  context?: string;
  /** Chunk ids from the base manifest (incremental only). */
  baseChunks?: string[];
}

function planDisk(
  disk: BackupViewDisk,
  base: Manifest | undefined,
  noBase: FullReadReason,
  chunkBytes: number,
): DiskPlan {
  const full = (fullReason: FullReadReason): DiskPlan => ({ disk, chunkBytes, mode: 'full', fullReason });
  if ('fullReason' in disk.changed) return full(disk.changed.fullReason);
  const b = base?.disks.find((d) => d.name === disk.name);
  if (!base) return full(noBase);
  if (!b) return full('first');
  if (b.sizeBytes !== disk.sizeBytes) return full('size-changed');
  // The base's chunk ids name other pieces of the disk: none can be kept.
  if (b.chunkBytes !== chunkBytes || b.chunks.length !== chunkCountOf(disk.sizeBytes, chunkBytes))
    return full('chunk-size-changed');
  return { disk, chunkBytes, mode: 'incremental', context: disk.changed.context, baseChunks: b.chunks };
}

/**
 * Backs up every disk of `view` into `sink`: per disk, the chunks to read are all of them (full; zero extents are
 * not read but named by the zero chunk's id) or those the dirty context marks (incremental; the others keep the
 * base manifest's ids, which are checked present, and touched, in the store: one the store lost is read again).
 * Only chunks the store lacks are sealed and sent; reading, sealing and storing overlap (pipeline-send.ts). The
 * caller writes the manifest and commits or aborts the view.
 */
export async function backupDisks(
  view: BackupView,
  base: Manifest | undefined,
  keys: ChunkKeys,
  sink: ChunkSink,
  connect: NbdConnector,
  progress: Progress = () => {},
  /** Why disks read whole when there is no `base` (default `first`; `base-missing` when it could not be read). */
  noBase: FullReadReason = 'first',
  codec: ChunkCodec = inlineCodec(keys),
  /** Where the disks are cut (a base disk cut otherwise reads whole: `chunk-size-changed`). */
  chunkBytes: number = BACKUP_CHUNK_BYTES_NEW,
  /** `askBaseChunks(sink, base)`, started beside the view's open: those ids are not asked again. */
  baseAsked?: BaseChunksAsked,
): Promise<ManifestDisk[]> {
  if (!isChunkSize(chunkBytes)) throw new InvalidStateError(`${chunkBytes} bytes is not a chunk size`);
  if (base && base.keyFingerprint !== keys.fingerprint)
    throw new KeyMismatchError(
      `base snapshot ${base.id} was made with key ${base.keyFingerprint}, this backup's key is ${keys.fingerprint}`,
      `snapshot/${base.id}`,
    );
  const zero = new ZeroIds(keys);
  const plans = view.disks.map((d) => planDisk(d, base, noBase, chunkBytes));
  const conns: NbdConnection[] = [];
  try {
    // First every disk's list of chunks to read, so that progress has its total.
    const work: Array<{ plan: DiskPlan; nbd: NbdConnection; ids: string[]; toRead: number[] }> = [];
    for (const plan of plans) {
      const d = plan.disk;
      const nbd = await connect({
        socket: d.socket,
        exportName: d.exportName,
        contexts: ['base:allocation', ...(plan.context ? [plan.context] : [])],
      });
      conns.push(nbd);
      if (nbd.sizeBytes < d.sizeBytes)
        throw new InvalidStateError(
          `NBD export ${d.exportName} of disk ${d.name} has ${nbd.sizeBytes} bytes, the disk ${d.sizeBytes}`,
        );
      const n = chunkCountOf(d.sizeBytes, chunkBytes);
      const ids: string[] = new Array<string>(n).fill('');
      const zeros = zeroChunks(await extentsOf(nbd, 'base:allocation', d.sizeBytes), d.sizeBytes, chunkBytes);
      let candidates: number[];
      if (plan.mode === 'incremental') {
        const extents = await extentsOf(nbd, plan.context!, d.sizeBytes);
        const dirty = chunksFlagged(extents, NBD_STATE_DIRTY, chunkBytes);
        candidates = [];
        for (let i = 0; i < n; i++) {
          if (dirty.has(i)) candidates.push(i);
          else ids[i] = plan.baseChunks![i]!;
        }
      } else candidates = Array.from({ length: n }, (_, i) => i);
      const toRead: number[] = [];
      for (const i of candidates) {
        if (zeros.has(i)) ids[i] = zero.id(chunkLength(d.sizeBytes, chunkBytes, i));
        else toRead.push(i);
      }
      work.push({ plan, nbd, ids, toRead });
    }
    // Chunks taken without reading (the base's, zero ones) must be in the store; `missing` touches them. It runs
    // while the chunks to read are read (at 1 MiB chunks a 2 GiB disk's incremental keeps ~2,000: 20-30 ms here).
    // One the store lost is read after them, or for a zero chunk, sealed and sent.
    const takenAt = work.map((w) => w.ids.flatMap((id, i) => (id === '' ? [] : [i])));
    const taken = work.flatMap((w, k) => takenAt[k]!.map((i) => w.ids[i]!));
    const asked = baseAsked?.ids ?? new Set<ChunkId>();
    const lostAsked = Promise.all([
      missingOf(
        sink,
        taken.filter((id) => !asked.has(id)),
      ),
      baseAsked?.lost ?? new Set<ChunkId>(),
    ]).then(([a, b]) => new Set([...a, ...b]));
    lostAsked.catch(() => {}); // awaited after the reads; a failed read must not leave it unhandled
    const lengthOf = (w: (typeof work)[number], indices: number[]) =>
      indices.reduce((t, i) => t + chunkLength(w.plan.disk.sizeBytes, chunkBytes, i), 0);
    let total = work.reduce((s, w) => s + lengthOf(w, w.toRead), 0);
    let done = 0;
    progress(0, total);
    const sender = new ChunkSender(sink, codec, (length) => {
      done += length;
      progress(done, total);
    });
    const sent = new Map<(typeof work)[number], SentFigures>();
    const send = async (w: (typeof work)[number], indices: number[]) => {
      const f = await sender.sendDisk(w.nbd, w.plan.disk.sizeBytes, chunkBytes, indices, w.ids);
      const before = sent.get(w) ?? { readBytes: 0, newChunks: 0, storedBytes: 0 };
      sent.set(w, {
        readBytes: before.readBytes + f.readBytes,
        newChunks: before.newChunks + f.newChunks,
        storedBytes: before.storedBytes + f.storedBytes,
      });
    };
    for (const w of work) await send(w, w.toRead);
    const lost = await lostAsked;
    const sentZero = new Set<string>();
    for (const [k, w] of work.entries()) {
      const again: number[] = [];
      for (const i of takenAt[k]!) {
        const id = w.ids[i]!;
        if (!lost.has(id)) continue;
        const zlen = zero.has(id);
        if (zlen !== undefined) {
          if (!sentZero.has(id)) {
            await sink.putChunk(id, keys.sealChunk(id, Buffer.alloc(zlen)));
            sentZero.add(id);
          }
        } else again.push(i);
      }
      if (again.length) {
        for (const i of again) w.ids[i] = '';
        total += lengthOf(w, again);
        await send(w, again);
      }
    }
    const out: ManifestDisk[] = [];
    for (const w of work) {
      const size = w.plan.disk.sizeBytes;
      const { readBytes, newChunks, storedBytes } = sent.get(w)!; // every disk was sent (maybe no chunk)
      const empty = w.ids.indexOf('');
      if (empty >= 0) throw new InvalidStateError(`disk ${w.plan.disk.name}: chunk ${empty} was never read`);
      out.push({
        name: w.plan.disk.name,
        sizeBytes: size,
        chunkBytes,
        chunks: w.ids,
        mode: w.plan.mode,
        ...(w.plan.fullReason ? { fullReason: w.plan.fullReason } : {}),
        readBytes,
        newChunks,
        storedBytes,
      });
    }
    return out;
  } finally {
    await Promise.all(conns.map((c) => c.close().catch(() => {})));
  }
}

/** Which snapshot disk goes to which target disk. */
export type DiskMapping = ReadonlyArray<{ from: string; to: string }>;

/**
 * Checks that `manifest` is this key's and unchanged (fingerprint, then signature) and that every mapped disk has a
 * target at least as large: all before anything is written.
 */
export function checkRestorable(
  manifest: Manifest,
  keys: ChunkKeys,
  target: Pick<RestoreView, 'disks'>,
  mapping: DiskMapping,
): void {
  if (manifest.keyFingerprint !== keys.fingerprint)
    throw new KeyMismatchError(
      `snapshot ${manifest.id} was made with key ${manifest.keyFingerprint}; the key given has fingerprint ${keys.fingerprint}: nothing was written`,
      `snapshot/${manifest.id}`,
    );
  keys.verifyManifest(manifest);
  for (const m of mapping) {
    const src = manifest.disks.find((d) => d.name === m.from);
    if (!src)
      throw new InvalidStateError(`snapshot ${manifest.id} has no disk ${m.from}`, `snapshot/${manifest.id}`);
    const dst = target.disks.find((d) => d.name === m.to);
    if (!dst) throw new InvalidStateError(`the restore target has no disk ${m.to}: nothing was written`);
    if (dst.sizeBytes < src.sizeBytes)
      throw new InvalidStateError(
        `disk ${m.to} has ${dst.sizeBytes} bytes, smaller than snapshot ${manifest.id}'s disk ${m.from} (${src.sizeBytes}): grow it first; nothing was written`,
      );
  }
}

/**
 * Writes the snapshot's disks into `target` (checked first by `checkRestorable`): every chunk fetched from `source`,
 * opened (checksum, tag, id re-derived) and written; zero chunks as NBD write-zeroes. A damaged chunk fails the
 * restore naming the snapshot and chunk.
 */
export async function restoreDisks(
  manifest: Manifest,
  keys: ChunkKeys,
  source: ChunkSource,
  target: Pick<RestoreView, 'disks'>,
  mapping: DiskMapping,
  connect: NbdConnector,
  progress: Progress = () => {},
  codec: ChunkCodec = inlineCodec(keys),
): Promise<Array<{ name: string; bytesWritten: number }>> {
  checkRestorable(manifest, keys, target, mapping);
  const zero = new ZeroIds(keys);
  const total = mapping.reduce((s, m) => s + manifest.disks.find((d) => d.name === m.from)!.sizeBytes, 0);
  let done = 0;
  progress(0, total);
  const out: Array<{ name: string; bytesWritten: number }> = [];
  for (const m of mapping) {
    const src = manifest.disks.find((d) => d.name === m.from)!;
    const dst = target.disks.find((d) => d.name === m.to)!;
    const nbd = await connect({ socket: dst.socket, exportName: dst.exportName });
    let bytesWritten = 0;
    try {
      if (nbd.readOnly)
        throw new InvalidStateError(`NBD export ${dst.exportName} of disk ${m.to} is read-only`);
      const indices = src.chunks.map((_, i) => i);
      await mapLimited(indices, RESTORE_CHUNKS_IN_FLIGHT, async (i) => {
        const id = src.chunks[i]!;
        const len = chunkLength(src.sizeBytes, src.chunkBytes, i);
        const at = i * src.chunkBytes;
        if (id === zero.id(len)) await nbd.writeZeroes(at, len);
        else {
          const plain = await readChunk(manifest, src, i, codec, source);
          await nbd.write(at, plain);
          bytesWritten += len;
        }
        done += len;
        progress(done, total);
      });
      await nbd.flush();
    } finally {
      await nbd.close().catch(() => {});
    }
    out.push({ name: m.to, bytesWritten });
  }
  return out;
}

/** Fetches and opens chunk `i` of a snapshot's disk (CorruptDataError naming the snapshot, disk and chunk). */
export async function readChunk(
  manifest: Manifest,
  disk: ManifestDisk,
  i: number,
  codec: Pick<ChunkCodec, 'open'>,
  source: ChunkSource,
): Promise<Buffer> {
  const id = disk.chunks[i]!;
  const len = chunkLength(disk.sizeBytes, disk.chunkBytes, i);
  let plain: Buffer;
  try {
    plain = await codec.open(id, await source.getChunk(id));
  } catch (e) {
    if (e instanceof VmlinkError && e.kind !== 'corrupt') throw e;
    throw new CorruptDataError(
      `snapshot ${manifest.id}, disk ${disk.name}, chunk ${i} (${id}): ${(e as Error).message}`,
      `snapshot/${manifest.id}`,
    );
  }
  if (plain.length !== len)
    throw new CorruptDataError(
      `snapshot ${manifest.id}, disk ${disk.name}, chunk ${i} (${id}) holds ${plain.length} bytes, not ${len}`,
      `snapshot/${manifest.id}`,
    );
  return plain;
}

/**
 * Writes the bytes [offset, offset+length) of a snapshot's disk through `write` (at offsets relative to `offset`),
 * skipping zero chunks (the target reads as zeroes there: a fresh sparse file). Checked like a restore first.
 */
export async function restoreRange(
  manifest: Manifest,
  diskName: string,
  range: { offset: number; length: number },
  keys: ChunkKeys,
  source: ChunkSource,
  write: (at: number, data: Buffer) => Promise<void>,
  progress: Progress = () => {},
  codec: ChunkCodec = inlineCodec(keys),
): Promise<number> {
  checkRestorable(manifest, keys, { disks: [] }, []);
  const disk = manifest.disks.find((d) => d.name === diskName);
  if (!disk)
    throw new InvalidStateError(`snapshot ${manifest.id} has no disk ${diskName}`, `snapshot/${manifest.id}`);
  const end = range.offset + range.length;
  if (range.offset < 0 || end > disk.sizeBytes)
    throw new InvalidStateError(`range ${range.offset}+${range.length} lies outside disk ${diskName}`);
  const zero = new ZeroIds(keys);
  const first = Math.floor(range.offset / disk.chunkBytes);
  const last = Math.floor((end - 1) / disk.chunkBytes);
  const indices = Array.from({ length: last - first + 1 }, (_, k) => first + k);
  let done = 0;
  let written = 0;
  progress(0, range.length);
  await mapLimited(indices, BACKUP_TRANSFER_CONCURRENCY, async (i) => {
    const at = i * disk.chunkBytes;
    const len = chunkLength(disk.sizeBytes, disk.chunkBytes, i);
    const from = Math.max(at, range.offset);
    const to = Math.min(at + len, end);
    if (disk.chunks[i] !== zero.id(len)) {
      const plain = await readChunk(manifest, disk, i, codec, source);
      await write(from - range.offset, plain.subarray(from - at, to - at));
      written += to - from;
    }
    done += to - from;
    progress(done, range.length);
  });
  return written;
}
