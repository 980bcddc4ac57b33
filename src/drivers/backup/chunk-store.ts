// A backup store in a directory (docs/backup.md): content-addressed chunk blobs and one manifest per snapshot,
// written atomically (tmp/, fsync, rename, fsync of the directory), garbage-collected by mark and sweep with a grace
// period, verified by re-reading every chunk. It never sees a key: it checks blobs by their keyless SHA-256 and binds
// itself to the key fingerprint of its first snapshot.
//
//   <path>/store.json                  { version, keyFingerprint? }
//   <path>/chunks/<id[0..3]>/<id>      blobs (never changed; `<id>.bad`: moved aside by verify, checksum failed)
//   <path>/snapshots/<vm>/<stamp>.json manifests
//   <path>/verify/<vm>/<stamp>.json    each snapshot's last verify outcome
//   <path>/tmp/                        partial writes
//
// Every path is built from a schema-checked id (64 hex digits, `vm@stamp`), never from text as given; files are read
// without following links and with a cap. Data comes from other agents over the network: a blob whose checksum fails,
// a manifest that breaks its schema or names chunks the store lacks, is refused before anything is written.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, lstat, lutimes, mkdir, open, rename, rm, statfs } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  BACKUP_BLOB_MAX_BYTES,
  BACKUP_MANIFEST_MAX_BYTES,
  BACKUP_SNAPSHOTS_LIST_MAX,
  type BackupStoreConfig,
  BackupStoreConfigSchema,
  type BackupStoreStatus,
  type ChunkId,
  type GcResult,
  type Manifest,
  ManifestSchema,
  SNAPSHOT_STAMP_PATTERN,
  type SnapshotId,
  type SnapshotSummary,
  type VerifyResult,
} from '../../shared/backup.js';
import { blobProblem, canonicalJson } from '../../shared/backup-crypto.js';
import { sealedHere } from '../../shared/backup-sealed.js';
import {
  ConflictError,
  CorruptDataError,
  InvalidRequestError,
  InvalidStateError,
  KeyMismatchError,
  NotFoundError,
  StoreFullError,
  VmlinkError,
} from '../../shared/errors.js';
import { KeyedQueue, mapLimited } from '../../shared/queue.js';
import { readFileCapped } from '../../shared/state-file.js';
import { type ChunkBatch, chunkBatchOf, type StageIo } from './chunk-store-batch.js';
import {
  CHUNK_NAME,
  checkChunkId,
  checkSnapshotId,
  fsyncDir,
  isCode,
  lstatOrUndefined,
  pidAlive,
  readdirOrEmpty,
} from './chunk-store-files.js';
import {
  RECORD_PROBLEMS_MAX,
  type StoreFile,
  StoreFileSchema,
  summaryOf,
  type VerifyRecord,
  VerifyRecordSchema,
} from './chunk-store-records.js';
import type { ChunkStore } from './types.js';

/** A file in tmp/ older than this, or left by a process that is gone, is a crashed write's leftover. */
export const STORE_TMP_STALE_MS = 10 * 60 * 1000;
/** Chunk files checked (stat, touch, read) at once. */
const PARALLEL = 16;
/** Chunks read and checked at once by verify. */
const VERIFY_PARALLEL = 4;
/** Most problems one verify returns, and one snapshot's record keeps. */
const VERIFY_PROBLEMS_MAX = 1000;

const VM_NAME = /^[a-z][a-z0-9-]{0,30}$/;
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** Test seams: how file contents are written (to inject ENOSPC), and the clock. */
export interface DirChunkStoreOptions {
  write?: (fh: FileHandle, data: Buffer) => Promise<void>;
  now?: () => number;
}

// One lock per store directory in this process: manifests, deletions and GC take turns, so a GC never sweeps a chunk
// between a manifest's check that it is there and the manifest landing (any number of store objects may share a path).
const locks = new KeyedQueue();

/** The chunk store of `docs/backup.md` in a local directory; see the file comment. */
export class DirChunkStore implements ChunkStore {
  readonly #root: string;
  readonly #write: (fh: FileHandle, data: Buffer) => Promise<void>;
  readonly #now: () => number;
  /** Chunk writes made durable in batches (chunk-store-batch.ts): flushed before the chunk directory is read. */
  readonly #batch: ChunkBatch;
  readonly #io: StageIo = { write: (fh, d) => this.#write(fh, d), fsError: (e, w) => this.#fsError(e, w) };
  /** Summaries of manifests already parsed, by file (keyed on mtime and size: manifests never change in place). */
  readonly #summaries = new Map<string, { mtimeMs: number; size: number; manifest: Manifest }>();

  private constructor(
    readonly config: BackupStoreConfig,
    opts: DirChunkStoreOptions,
  ) {
    this.#root = config.path;
    this.#write = opts.write ?? ((fh, data) => fh.writeFile(data));
    this.#now = opts.now ?? Date.now;
    this.#batch = chunkBatchOf(this.#root);
  }

  /** Opens (creating when needed) the store at `config.path`, and removes crashed writes' leftovers from tmp/. */
  static async open(config: BackupStoreConfig, opts: DirChunkStoreOptions = {}): Promise<DirChunkStore> {
    const parsed = BackupStoreConfigSchema.safeParse(config);
    if (!parsed.success) {
      throw new InvalidRequestError(
        `backup store ${JSON.stringify((config as { name?: unknown })?.name)}: ${parsed.error.issues[0]!.message}`,
      );
    }
    const s = new DirChunkStore(parsed.data, opts);
    await mkdir(s.#root, { recursive: true, mode: DIR_MODE });
    for (const d of ['chunks', 'snapshots', 'verify', 'tmp']) {
      await mkdir(join(s.#root, d), { recursive: true, mode: DIR_MODE });
      const st = await lstat(join(s.#root, d));
      if (!st.isDirectory())
        throw new InvalidStateError(`backup store ${config.name}: ${d}/ is not a directory`);
    }
    if ((await s.#readStoreFile()) === undefined)
      await s.#writeAtomic(s.#storeFile(), s.#storeJson({ version: 1 }), 'store.json');
    await s.#batch.flush(s.#io); // this process's staged chunks are not leftovers, however old
    await s.#cleanTmp();
    return s;
  }

  // ---- Paths (from checked ids only) ----------------------------------------------------------------------------

  #storeFile(): string {
    return join(this.#root, 'store.json');
  }
  #chunkPath(id: ChunkId): string {
    return join(this.#root, 'chunks', id.slice(0, 4), id);
  }
  #manifestPath(id: SnapshotId): string {
    const [vm, stamp] = id.split('@') as [string, string];
    return join(this.#root, 'snapshots', vm, `${stamp}.json`);
  }
  #recordPath(id: SnapshotId): string {
    const [vm, stamp] = id.split('@') as [string, string];
    return join(this.#root, 'verify', vm, `${stamp}.json`);
  }
  #subject(): string {
    return `backup-store/${this.config.name}`;
  }

  // ---- Files ---------------------------------------------------------------------------------------------------

  #storeJson(f: StoreFile): Buffer {
    return Buffer.from(`${JSON.stringify(f, null, 2)}\n`);
  }

  async #readStoreFile(): Promise<StoreFile | undefined> {
    const text = await this.#readCapped(this.#storeFile(), 64 * 1024, 'store.json');
    if (text === undefined) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new CorruptDataError(
        `backup store ${this.config.name}: store.json is not JSON (${(e as Error).message})`,
        this.#subject(),
      );
    }
    const r = StoreFileSchema.safeParse(value);
    if (!r.success) {
      throw new CorruptDataError(
        `backup store ${this.config.name}: store.json: ${r.error.issues[0]!.message}`,
        this.#subject(),
      );
    }
    return r.data;
  }

  /** A file's text, read without following a link, refused past `max` bytes; undefined when missing. */
  async #readCapped(path: string, max: number, what: string): Promise<string | undefined> {
    try {
      return await readFileCapped(path, { maxBytes: max });
    } catch (e) {
      throw new CorruptDataError(
        `backup store ${this.config.name}: ${what}: ${(e as Error).message}`,
        this.#subject(),
      );
    }
  }

  /** Writes `data` to `final` atomically: a file of its own in tmp/ (0600), fsync, rename, fsync of the directory. */
  async #writeAtomic(final: string, data: Buffer, what: string): Promise<void> {
    const tmp = join(
      this.#root,
      'tmp',
      `${basename(final)}.${process.pid}.${randomBytes(6).toString('hex')}`,
    );
    try {
      const fh = await open(tmp, WRITE_FLAGS, FILE_MODE);
      try {
        await this.#write(fh, data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await mkdir(dirname(final), { recursive: true, mode: DIR_MODE });
      await rename(tmp, final);
      await fsyncDir(dirname(final));
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw this.#fsError(e, what);
    }
  }

  #fsError(e: unknown, what: string): unknown {
    if (isCode(e, 'ENOSPC', 'EDQUOT')) {
      return new StoreFullError(
        `backup store ${this.config.name}: its filesystem is full writing ${what}; that write was dropped, earlier snapshots are intact`,
        this.#subject(),
      );
    }
    return e;
  }

  /** Removes tmp/ files left by a process that is gone, or older than STORE_TMP_STALE_MS; how many went. */
  async #cleanTmp(): Promise<number> {
    const dir = join(this.#root, 'tmp');
    let removed = 0;
    for (const name of await readdirOrEmpty(dir)) {
      const pid = Number(/\.(\d+)\.[0-9a-f]{12}$/.exec(name)?.[1] ?? Number.NaN);
      const st = await lstatOrUndefined(join(dir, name));
      if (!st) continue;
      const ours = pid === process.pid;
      const stale = this.#now() - st.mtimeMs > STORE_TMP_STALE_MS;
      if (stale || (!ours && !(Number.isInteger(pid) && pid > 0 && pidAlive(pid)))) {
        await rm(join(dir, name), { force: true, recursive: st.isDirectory() });
        removed++;
      }
    }
    return removed;
  }

  // ---- Chunks ----------------------------------------------------------------------------------------------------

  async missing(ids: ChunkId[]): Promise<ChunkId[]> {
    const checked = ids.map(checkChunkId);
    const t = new Date(this.#now());
    const present = await mapLimited(checked, PARALLEL, async (id) => {
      if (this.#batch.has(id)) return true; // written by this process, durable before any manifest
      try {
        await lutimes(this.#chunkPath(id), t, t); // GC grace: a chunk a backup is about to name is young again
        return true;
      } catch (e) {
        if (isCode(e, 'ENOENT', 'ENOTDIR')) return false;
        throw e;
      }
    });
    return checked.filter((_, i) => !present[i]);
  }

  async putChunk(id: ChunkId, blob: Buffer): Promise<boolean> {
    checkChunkId(id);
    if (!Buffer.isBuffer(blob)) throw new InvalidRequestError(`chunk ${id}: not a byte buffer`);
    const problem = sealedHere(blob) ? undefined : blobProblem(blob); // ours are right by construction
    if (problem !== undefined)
      throw new CorruptDataError(
        `chunk ${id} refused by backup store ${this.config.name}: ${problem}`,
        `chunk/${id}`,
      );
    const path = this.#chunkPath(id);
    if (this.#batch.has(id)) return false;
    if (await lstatOrUndefined(path)) {
      const t = new Date(this.#now());
      await lutimes(path, t, t).catch(() => undefined);
      return false;
    }
    return this.#batch.stage(id, path, blob, randomBytes(6).toString('hex'), this.#io);
  }

  /** Makes every chunk written so far durable under its name now (a manifest, GC, verify and status do it first). */
  flush(): Promise<void> {
    return this.#batch.flush(this.#io);
  }

  async getChunk(id: ChunkId): Promise<Buffer> {
    checkChunkId(id);
    if (this.#batch.has(id)) await this.#batch.flush(this.#io);
    const blob = await this.#readChunk(id);
    if (!blob) throw new NotFoundError('chunk', id);
    return blob;
  }

  async #readChunk(id: ChunkId): Promise<Buffer | undefined> {
    const path = this.#chunkPath(id);
    let fh: FileHandle;
    try {
      fh = await open(path, READ_FLAGS);
    } catch (e) {
      if (isCode(e, 'ENOENT', 'ENOTDIR')) return undefined;
      if (isCode(e, 'ELOOP'))
        throw new CorruptDataError(`chunk ${id}: its file is a symbolic link, refused`, `chunk/${id}`);
      throw e;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new CorruptDataError(`chunk ${id}: not a regular file`, `chunk/${id}`);
      if (st.size > BACKUP_BLOB_MAX_BYTES) {
        throw new CorruptDataError(`chunk ${id}: ${st.size} bytes, more than a blob may have`, `chunk/${id}`);
      }
      const buf = Buffer.allocUnsafe(st.size);
      let at = 0;
      while (at < buf.length) {
        const { bytesRead } = await fh.read(buf, at, buf.length - at, at);
        if (bytesRead === 0) break;
        at += bytesRead;
      }
      return at === buf.length ? buf : buf.subarray(0, at);
    } finally {
      await fh.close();
    }
  }

  // ---- Snapshots -------------------------------------------------------------------------------------------------

  async putManifest(m: Manifest): Promise<void> {
    const r = ManifestSchema.safeParse(m);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new InvalidRequestError(
        `manifest ${JSON.stringify((m as { id?: unknown })?.id)?.slice(0, 80)}: ${i.path.join('.') || '(root)'}: ${i.message}`,
      );
    }
    const man = r.data;
    if (man.id.split('@')[0] !== man.vm) {
      throw new InvalidRequestError(
        `manifest ${man.id}: its id names another VM than ${man.vm}`,
        `snapshot/${man.id}`,
      );
    }
    const text = Buffer.from(JSON.stringify(man));
    if (text.length > BACKUP_MANIFEST_MAX_BYTES) {
      throw new InvalidRequestError(
        `manifest ${man.id}: ${text.length} bytes, more than ${BACKUP_MANIFEST_MAX_BYTES}`,
      );
    }
    await locks.run(this.#root, async () => {
      await this.#batch.flush(this.#io); // every chunk it names durable before it is
      const sf = (await this.#readStoreFile()) ?? { version: 1 as const };
      if (sf.keyFingerprint !== undefined && sf.keyFingerprint !== man.keyFingerprint) {
        throw new KeyMismatchError(
          `backup store ${this.config.name} holds snapshots of the backup key with fingerprint ${sf.keyFingerprint}; snapshot ${man.id} was made with ${man.keyFingerprint}: refused, nothing written`,
          `snapshot/${man.id}`,
        );
      }
      const ids = [...new Set(man.disks.flatMap((d) => d.chunks))];
      const there = await mapLimited(
        ids,
        PARALLEL,
        async (id) => (await lstatOrUndefined(this.#chunkPath(id)))?.isFile() === true,
      );
      const lacking = ids.filter((_, i) => !there[i]);
      if (lacking.length > 0 && this.#batch.lastFailure) throw this.#batch.lastFailure; // e.g. the disk filled
      if (lacking.length > 0) {
        throw new InvalidStateError(
          `snapshot ${man.id} names ${lacking.length} chunk${lacking.length === 1 ? '' : 's'} backup store ${this.config.name} lacks (${lacking.slice(0, 3).join(', ')}${lacking.length > 3 ? ', ...' : ''}): refused, nothing written`,
          `snapshot/${man.id}`,
        );
      }
      const path = this.#manifestPath(man.id);
      const existing = await this.#readCapped(path, BACKUP_MANIFEST_MAX_BYTES, `snapshot ${man.id}`);
      if (existing !== undefined) {
        let same = false;
        try {
          same = canonicalJson(JSON.parse(existing)) === canonicalJson(man);
        } catch {
          same = false;
        }
        if (same) return;
        throw new ConflictError(
          `backup store ${this.config.name} already holds snapshot ${man.id} with other content`,
          `snapshot/${man.id}`,
        );
      }
      if (sf.keyFingerprint === undefined) {
        await this.#writeAtomic(
          this.#storeFile(),
          this.#storeJson({ ...sf, keyFingerprint: man.keyFingerprint }),
          'store.json',
        );
      }
      await this.#writeAtomic(path, text, `the manifest of snapshot ${man.id}`);
    });
  }

  async getManifest(id: SnapshotId): Promise<Manifest> {
    checkSnapshotId(id);
    const m = await this.#loadManifest(id);
    if (!m) throw new NotFoundError('snapshot', id);
    return m;
  }

  /** The manifest stored as `id`, parsed and checked (it must say it is `id`); undefined when absent. */
  async #loadManifest(id: SnapshotId): Promise<Manifest | undefined> {
    const path = this.#manifestPath(id);
    const st = await lstatOrUndefined(path);
    if (!st) return undefined;
    const cached = this.#summaries.get(path);
    if (cached && cached.mtimeMs === st.mtimeMs && cached.size === st.size) return cached.manifest;
    const text = await this.#readCapped(path, BACKUP_MANIFEST_MAX_BYTES, `the manifest of snapshot ${id}`);
    if (text === undefined) return undefined;
    const bad = (what: string) =>
      new CorruptDataError(`snapshot ${id}: its manifest ${what}`, `snapshot/${id}`);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw bad(`is not JSON (${(e as Error).message})`);
    }
    const r = ManifestSchema.safeParse(value);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw bad(`breaks its schema at ${i.path.join('.') || '(root)'}: ${i.message}`);
    }
    if (r.data.id !== id) throw bad(`says it is ${r.data.id}`);
    this.#summaries.set(path, { mtimeMs: st.mtimeMs, size: st.size, manifest: r.data });
    return r.data;
  }

  /** Every snapshot id with a manifest file in the store (sorted), whether or not it parses. */
  async #snapshotIds(vm?: string): Promise<SnapshotId[]> {
    const vms = vm === undefined ? await readdirOrEmpty(join(this.#root, 'snapshots')) : [vm];
    const ids: SnapshotId[] = [];
    for (const v of vms.filter((n) => VM_NAME.test(n)).sort()) {
      for (const f of (await readdirOrEmpty(join(this.#root, 'snapshots', v))).sort()) {
        const stamp = f.endsWith('.json') ? f.slice(0, -5) : '';
        if (SNAPSHOT_STAMP_PATTERN.test(stamp)) ids.push(`${v}@${stamp}`);
      }
    }
    return ids;
  }

  async #readRecord(id: SnapshotId): Promise<VerifyRecord | undefined> {
    const text = await this.#readCapped(this.#recordPath(id), 256 * 1024, `the verify record of ${id}`).catch(
      () => undefined,
    );
    if (text === undefined) return undefined;
    try {
      const r = VerifyRecordSchema.safeParse(JSON.parse(text));
      return r.success ? r.data : undefined;
    } catch {
      return undefined;
    }
  }

  /** Snapshots (oldest first by id), each with its last verify; a manifest that cannot be read is left out (verify
   * names it). */
  async list(vm?: string): Promise<SnapshotSummary[]> {
    if (vm !== undefined && (typeof vm !== 'string' || !VM_NAME.test(vm))) {
      throw new InvalidRequestError(`VM name ${JSON.stringify(vm)?.slice(0, 80)} is not a valid name`);
    }
    const out: SnapshotSummary[] = [];
    for (const id of await this.#snapshotIds(vm)) {
      if (out.length >= BACKUP_SNAPSHOTS_LIST_MAX) break;
      const m = await this.#loadManifest(id).catch(() => undefined);
      if (m) out.push(summaryOf(m, await this.#readRecord(id)));
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  async deleteSnapshots(ids: SnapshotId[]): Promise<SnapshotId[]> {
    const checked = ids.map(checkSnapshotId);
    return locks.run(this.#root, async () => {
      const deleted: SnapshotId[] = [];
      for (const id of new Set(checked)) {
        const path = this.#manifestPath(id);
        if (!(await lstatOrUndefined(path))) continue;
        await rm(path, { force: true });
        await rm(this.#recordPath(id), { force: true });
        this.#summaries.delete(path);
        await fsyncDir(dirname(path));
        deleted.push(id);
      }
      return deleted;
    });
  }

  // ---- Upkeep ----------------------------------------------------------------------------------------------------

  /** Every chunk file: its id (or `<id>.bad`), path and prefix directory. */
  async *#chunkFiles(): AsyncGenerator<{ name: string; id: ChunkId; bad: boolean; path: string }> {
    const top = join(this.#root, 'chunks');
    for (const prefix of (await readdirOrEmpty(top)).sort()) {
      if (!/^[0-9a-f]{4}$/.test(prefix)) continue;
      for (const name of await readdirOrEmpty(join(top, prefix))) {
        const bad = name.endsWith('.bad');
        const id = bad ? name.slice(0, -4) : name;
        if (!CHUNK_NAME.test(id) || !id.startsWith(prefix)) continue;
        yield { name, id, bad, path: join(top, prefix, name) };
      }
    }
  }

  async gc(graceMs: number): Promise<GcResult> {
    if (!Number.isFinite(graceMs) || graceMs < 0)
      throw new InvalidRequestError(`GC grace ${graceMs} ms is not a duration`);
    await this.#batch.flush(this.#io);
    return locks.run(this.#root, async () => {
      // Mark: every chunk any manifest names. One manifest that cannot be read stops GC: its chunks are unknown.
      const marked = new Set<ChunkId>();
      for (const id of await this.#snapshotIds()) {
        let m: Manifest | undefined;
        try {
          m = await this.#loadManifest(id);
        } catch (e) {
          throw new CorruptDataError(
            `backup store ${this.config.name}: GC stopped, nothing removed: ${(e as Error).message}`,
            `snapshot/${id}`,
          );
        }
        for (const d of m?.disks ?? []) for (const c of d.chunks) marked.add(c);
      }
      // Sweep: unnamed chunks older than the grace period.
      const res: GcResult = {
        store: this.config.name,
        chunksKept: 0,
        chunksRemoved: 0,
        bytesFreed: 0,
        chunksInGrace: 0,
      };
      const cutoff = this.#now() - graceMs;
      for await (const f of this.#chunkFiles()) {
        if (!f.bad && marked.has(f.id)) {
          res.chunksKept++;
          continue;
        }
        const st = await lstatOrUndefined(f.path);
        if (!st?.isFile()) continue;
        if (st.mtimeMs > cutoff) {
          res.chunksInGrace++;
          continue;
        }
        await rm(f.path, { force: true });
        res.chunksRemoved++;
        res.bytesFreed += st.size;
      }
      await this.#cleanTmp();
      return res;
    });
  }

  async verify(
    snapshots: SnapshotId[] | undefined,
    open?: (id: ChunkId, blob: Buffer) => Buffer,
    onProgress?: (done: number, total: number) => void,
  ): Promise<VerifyResult> {
    await this.#batch.flush(this.#io);
    const ids =
      snapshots === undefined ? await this.#snapshotIds() : [...new Set(snapshots.map(checkSnapshotId))];
    const res: VerifyResult = {
      store: this.config.name,
      snapshots: ids.length,
      chunksChecked: 0,
      bytesRead: 0,
      deep: open !== undefined,
      problems: [],
    };
    const perSnapshot = new Map<SnapshotId, string[]>(ids.map((id) => [id, []]));
    const note = (snapshot: SnapshotId | undefined, chunk: ChunkId | undefined, problem: string) => {
      if (res.problems.length < VERIFY_PROBLEMS_MAX) {
        res.problems.push({
          ...(snapshot === undefined ? {} : { snapshot }),
          ...(chunk === undefined ? {} : { chunk }),
          problem: problem.slice(0, 500),
        });
      }
      if (snapshot !== undefined) {
        const list = perSnapshot.get(snapshot)!;
        if (list.length < RECORD_PROBLEMS_MAX)
          list.push((chunk === undefined ? problem : `chunk ${chunk}: ${problem}`).slice(0, 500));
      }
    };
    // Which snapshots name each chunk (a chunk is read once, however many snapshots share it).
    const users = new Map<ChunkId, SnapshotId[]>();
    for (const id of ids) {
      let m: Manifest | undefined;
      try {
        m = await this.#loadManifest(id);
      } catch (e) {
        note(id, undefined, (e as Error).message);
        continue;
      }
      if (!m) {
        note(id, undefined, `snapshot ${id} is not in backup store ${this.config.name}`);
        continue;
      }
      for (const d of m.disks) {
        for (const c of d.chunks) {
          const u = users.get(c);
          if (!u) users.set(c, [id]);
          else if (u[u.length - 1] !== id) u.push(id);
        }
      }
    }
    const chunks = [...users.keys()];
    let done = 0;
    onProgress?.(0, chunks.length);
    await mapLimited(chunks, VERIFY_PARALLEL, async (c) => {
      const problem = await this.#checkChunk(c, open, (n) => {
        res.bytesRead += n;
      });
      res.chunksChecked++;
      if (problem !== undefined) for (const s of users.get(c)!) note(s, c, problem);
      onProgress?.(++done, chunks.length);
    });
    const at = new Date(this.#now()).toISOString();
    for (const [id, problems] of perSnapshot) {
      if (!(await lstatOrUndefined(this.#manifestPath(id)))) continue; // no record of a snapshot the store lacks
      const rec: VerifyRecord = { ok: problems.length === 0, at, problems };
      await this.#writeAtomic(
        this.#recordPath(id),
        Buffer.from(`${JSON.stringify(rec)}\n`),
        `the verify record of ${id}`,
      );
    }
    return res;
  }

  /** What is wrong with a stored chunk (missing, checksum, and with `open` decryption and id); undefined when fine. A
   * chunk whose keyless checksum fails is moved aside (`<id>.bad`), so the next backup that has the data sends it
   * again; one that only fails to open is left (a wrong key must not move good chunks). */
  async #checkChunk(
    id: ChunkId,
    open: ((id: ChunkId, blob: Buffer) => Buffer) | undefined,
    read: (n: number) => void,
  ): Promise<string | undefined> {
    let blob: Buffer | undefined;
    try {
      blob = await this.#readChunk(id);
    } catch (e) {
      return `unreadable: ${(e as Error).message}`;
    }
    if (!blob) return 'missing from the store';
    read(blob.length);
    const problem = blobProblem(blob);
    if (problem !== undefined) {
      const path = this.#chunkPath(id);
      await rename(path, `${path}.bad`).catch(() => undefined);
      return `${problem} (moved aside to ${basename(path)}.bad)`;
    }
    if (open) {
      try {
        open(id, blob);
      } catch (e) {
        return e instanceof VmlinkError ? e.message : `does not open: ${(e as Error).message}`;
      }
    }
    return undefined;
  }

  async status(): Promise<BackupStoreStatus> {
    await this.#batch.flush(this.#io);
    const sf = await this.#readStoreFile();
    let chunks = 0;
    let storedBytes = 0;
    for await (const f of this.#chunkFiles()) {
      if (f.bad) continue;
      const st = await lstatOrUndefined(f.path);
      if (!st?.isFile()) continue;
      chunks++;
      storedBytes += st.size;
    }
    const fs = await statfs(this.#root);
    return {
      name: this.config.name,
      offsite: this.config.offsite,
      ...(sf?.keyFingerprint === undefined ? {} : { keyFingerprint: sf.keyFingerprint }),
      snapshots: (await this.#snapshotIds()).length,
      chunks,
      storedBytes,
      freeBytes: Number(fs.bavail) * Number(fs.bsize),
    };
  }
}
