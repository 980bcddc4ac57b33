// The directory of a chunk store (chunk-store.ts) as files: the paths of its layout, built from checked ids only;
// capped reads that follow no link; atomic writes (tmp/, fsync, rename, fsync of the directory); store.json; a chunk's
// blob; every chunk file and snapshot id in it; manifests parsed and cached; verify records; crashed writes' leftovers
// in tmp/. It knows nothing of locks, batches or keys: DirChunkStore and the upkeep (chunk-store-upkeep.ts) use it.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  BACKUP_BLOB_MAX_BYTES,
  BACKUP_MANIFEST_MAX_BYTES,
  type ChunkId,
  type Manifest,
  ManifestSchema,
  SNAPSHOT_STAMP_PATTERN,
  type SnapshotId,
} from '../../shared/backup.js';
import { CorruptDataError, StoreFullError } from '../../shared/errors.js';
import { readFileCapped } from '../../shared/state-file.js';
import {
  CHUNK_NAME,
  fsyncDir,
  isCode,
  lstatOrUndefined,
  pidAlive,
  readdirOrEmpty,
} from './chunk-store-files.js';
import {
  type StoreFile,
  StoreFileSchema,
  type VerifyRecord,
  VerifyRecordSchema,
} from './chunk-store-records.js';

/** A file in tmp/ older than this, or left by a process that is gone, is a crashed write's leftover. */
export const STORE_TMP_STALE_MS = 10 * 60 * 1000;

export const VM_NAME = /^[a-z][a-z0-9-]{0,30}$/;
export const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** How file contents are written (a test seam, to inject ENOSPC). */
export type WriteFile = (fh: FileHandle, data: Buffer) => Promise<void>;

/** One chunk file: its id (the name without `.bad`), whether verify moved it aside, its path. */
export interface ChunkFile {
  name: string;
  id: ChunkId;
  bad: boolean;
  path: string;
}

/** The files of the store named `name` at `root`; see the file comment. */
export class StoreDir {
  /** Manifests already parsed, by file (keyed on mtime and size: manifests never change in place). */
  readonly #manifests = new Map<string, { mtimeMs: number; size: number; manifest: Manifest }>();

  constructor(
    readonly root: string,
    readonly name: string,
    readonly write: WriteFile,
    readonly now: () => number,
  ) {}

  // ---- Paths (from checked ids only) ----------------------------------------------------------------------------

  storeFile(): string {
    return join(this.root, 'store.json');
  }
  chunkPath(id: ChunkId): string {
    return join(this.root, 'chunks', id.slice(0, 4), id);
  }
  manifestPath(id: SnapshotId): string {
    const [vm, stamp] = id.split('@') as [string, string];
    return join(this.root, 'snapshots', vm, `${stamp}.json`);
  }
  recordPath(id: SnapshotId): string {
    const [vm, stamp] = id.split('@') as [string, string];
    return join(this.root, 'verify', vm, `${stamp}.json`);
  }
  /** The subject of the store's errors. */
  subject(): string {
    return `backup-store/${this.name}`;
  }

  // ---- Files ---------------------------------------------------------------------------------------------------

  async readStoreFile(): Promise<StoreFile | undefined> {
    const text = await this.readCapped(this.storeFile(), 64 * 1024, 'store.json');
    if (text === undefined) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new CorruptDataError(
        `backup store ${this.name}: store.json is not JSON (${(e as Error).message})`,
        this.subject(),
      );
    }
    const r = StoreFileSchema.safeParse(value);
    if (!r.success) {
      throw new CorruptDataError(
        `backup store ${this.name}: store.json: ${r.error.issues[0]!.message}`,
        this.subject(),
      );
    }
    return r.data;
  }

  writeStoreFile(f: StoreFile): Promise<void> {
    return this.writeAtomic(this.storeFile(), Buffer.from(`${JSON.stringify(f, null, 2)}\n`), 'store.json');
  }

  /** A file's text, read without following a link, refused past `max` bytes; undefined when missing. */
  async readCapped(path: string, max: number, what: string): Promise<string | undefined> {
    try {
      return await readFileCapped(path, { maxBytes: max });
    } catch (e) {
      throw new CorruptDataError(
        `backup store ${this.name}: ${what}: ${(e as Error).message}`,
        this.subject(),
      );
    }
  }

  /** Writes `data` to `final` atomically: a file of its own in tmp/ (0600), fsync, rename, fsync of the directory. */
  async writeAtomic(final: string, data: Buffer, what: string): Promise<void> {
    const tmp = join(this.root, 'tmp', `${basename(final)}.${process.pid}.${randomBytes(6).toString('hex')}`);
    try {
      const fh = await open(tmp, WRITE_FLAGS, FILE_MODE);
      try {
        await this.write(fh, data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await mkdir(dirname(final), { recursive: true, mode: DIR_MODE });
      await rename(tmp, final);
      await fsyncDir(dirname(final));
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw this.fsError(e, what);
    }
  }

  /** `e` as the store's error: a full filesystem becomes a `StoreFullError` naming what was being written. */
  fsError(e: unknown, what: string): unknown {
    if (isCode(e, 'ENOSPC', 'EDQUOT')) {
      return new StoreFullError(
        `backup store ${this.name}: its filesystem is full writing ${what}; that write was dropped, earlier snapshots are intact`,
        this.subject(),
      );
    }
    return e;
  }

  /** Removes tmp/ files left by a process that is gone, or older than STORE_TMP_STALE_MS; how many went. */
  async cleanTmp(): Promise<number> {
    const dir = join(this.root, 'tmp');
    let removed = 0;
    for (const name of await readdirOrEmpty(dir)) {
      const pid = Number(/\.(\d+)\.[0-9a-f]{12}$/.exec(name)?.[1] ?? Number.NaN);
      const st = await lstatOrUndefined(join(dir, name));
      if (!st) continue;
      const ours = pid === process.pid;
      const stale = this.now() - st.mtimeMs > STORE_TMP_STALE_MS;
      if (stale || (!ours && !(Number.isInteger(pid) && pid > 0 && pidAlive(pid)))) {
        await rm(join(dir, name), { force: true, recursive: st.isDirectory() });
        removed++;
      }
    }
    return removed;
  }

  // ---- Chunks ----------------------------------------------------------------------------------------------------

  /** The blob stored as `id` (size-capped, no link followed); undefined when there is none. */
  async readChunk(id: ChunkId): Promise<Buffer | undefined> {
    const path = this.chunkPath(id);
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

  /** Every chunk file (`<id>` or `<id>.bad`) under chunks/, prefix directories in order. */
  async *chunkFiles(): AsyncGenerator<ChunkFile> {
    const top = join(this.root, 'chunks');
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

  // ---- Snapshots -------------------------------------------------------------------------------------------------

  /** Every snapshot id with a manifest file in the store (sorted), whether or not it parses. */
  async snapshotIds(vm?: string): Promise<SnapshotId[]> {
    const vms = vm === undefined ? await readdirOrEmpty(join(this.root, 'snapshots')) : [vm];
    const ids: SnapshotId[] = [];
    for (const v of vms.filter((n) => VM_NAME.test(n)).sort()) {
      for (const f of (await readdirOrEmpty(join(this.root, 'snapshots', v))).sort()) {
        const stamp = f.endsWith('.json') ? f.slice(0, -5) : '';
        if (SNAPSHOT_STAMP_PATTERN.test(stamp)) ids.push(`${v}@${stamp}`);
      }
    }
    return ids;
  }

  /** The manifest stored as `id`, parsed and checked (it must say it is `id`); undefined when absent. */
  async loadManifest(id: SnapshotId): Promise<Manifest | undefined> {
    const path = this.manifestPath(id);
    const st = await lstatOrUndefined(path);
    if (!st) return undefined;
    const cached = this.#manifests.get(path);
    if (cached && cached.mtimeMs === st.mtimeMs && cached.size === st.size) return cached.manifest;
    const text = await this.readCapped(path, BACKUP_MANIFEST_MAX_BYTES, `the manifest of snapshot ${id}`);
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
    this.#manifests.set(path, { mtimeMs: st.mtimeMs, size: st.size, manifest: r.data });
    return r.data;
  }

  /** Removes snapshot `id`'s manifest and verify record; false when it had no manifest. */
  async removeSnapshot(id: SnapshotId): Promise<boolean> {
    const path = this.manifestPath(id);
    if (!(await lstatOrUndefined(path))) return false;
    await rm(path, { force: true });
    await rm(this.recordPath(id), { force: true });
    this.#manifests.delete(path);
    await fsyncDir(dirname(path));
    return true;
  }

  /** Snapshot `id`'s last verify outcome; undefined when there is none or it cannot be read. */
  async readRecord(id: SnapshotId): Promise<VerifyRecord | undefined> {
    const text = await this.readCapped(this.recordPath(id), 256 * 1024, `the verify record of ${id}`).catch(
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

  writeRecord(id: SnapshotId, rec: VerifyRecord): Promise<void> {
    return this.writeAtomic(
      this.recordPath(id),
      Buffer.from(`${JSON.stringify(rec)}\n`),
      `the verify record of ${id}`,
    );
  }
}
