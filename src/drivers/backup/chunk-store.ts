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
// without following links and with a cap (the files: chunk-store-dir.ts; GC, verify, status: chunk-store-upkeep.ts). Data comes from other agents over the network: a blob whose checksum fails,
// a manifest that breaks its schema or names chunks the store lacks, is refused before anything is written.
import { randomBytes } from 'node:crypto';
import { lutimesSync } from 'node:fs';
import { lstat, lutimes, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  BACKUP_MANIFEST_MAX_BYTES,
  BACKUP_SNAPSHOTS_LIST_MAX,
  type BackupStoreConfig,
  BackupStoreConfigSchema,
  type BackupStoreStatus,
  type ChunkId,
  type GcResult,
  type Manifest,
  ManifestSchema,
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
} from '../../shared/errors.js';
import { KeyedQueue } from '../../shared/queue.js';
import { type ChunkBatch, chunkBatchOf, type StageIo } from './chunk-store-batch.js';
import { DIR_MODE, StoreDir, VM_NAME, type WriteFile } from './chunk-store-dir.js';
import {
  checkChunkId,
  checkSnapshotId,
  inSyncSlices,
  isCode,
  lstatOrUndefined,
  lstatSyncOrUndefined,
} from './chunk-store-files.js';
import { summaryOf } from './chunk-store-records.js';
import { collectGarbage, type OpenChunk, storeStatus, verifySnapshots } from './chunk-store-upkeep.js';
import type { ChunkStore } from './types.js';

/** Test seams: how file contents are written (to inject ENOSPC), and the clock. */
export interface DirChunkStoreOptions {
  write?: WriteFile;
  now?: () => number;
}

// One lock per store directory in this process: manifests, deletions and GC take turns, so a GC never sweeps a chunk
// between a manifest's check that it is there and the manifest landing (any number of store objects may share a path).
const locks = new KeyedQueue();

/** The chunk store of `docs/backup.md` in a local directory; see the file comment. */
export class DirChunkStore implements ChunkStore {
  /** Its files (chunk-store-dir.ts). */
  readonly #dir: StoreDir;
  /** Chunk writes made durable in batches (chunk-store-batch.ts): flushed before the chunk directory is read. */
  readonly #batch: ChunkBatch;
  readonly #io: StageIo;

  private constructor(
    readonly config: BackupStoreConfig,
    opts: DirChunkStoreOptions,
  ) {
    const dir = new StoreDir(
      config.path,
      config.name,
      opts.write ?? ((fh, data) => fh.writeFile(data)),
      opts.now ?? Date.now,
    );
    this.#dir = dir;
    this.#io = { write: (fh, d) => dir.write(fh, d), fsError: (e, w) => dir.fsError(e, w) };
    this.#batch = chunkBatchOf(config.path);
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
    await mkdir(s.#dir.root, { recursive: true, mode: DIR_MODE });
    for (const d of ['chunks', 'snapshots', 'verify', 'tmp']) {
      await mkdir(join(s.#dir.root, d), { recursive: true, mode: DIR_MODE });
      const st = await lstat(join(s.#dir.root, d));
      if (!st.isDirectory())
        throw new InvalidStateError(`backup store ${config.name}: ${d}/ is not a directory`);
    }
    if ((await s.#dir.readStoreFile()) === undefined) await s.#dir.writeStoreFile({ version: 1 });
    await s.#batch.flush(s.#io); // this process's staged chunks are not leftovers, however old
    await s.#dir.cleanTmp();
    return s;
  }

  // ---- Chunks ----------------------------------------------------------------------------------------------------

  async missing(ids: ChunkId[]): Promise<ChunkId[]> {
    const checked = ids.map(checkChunkId);
    const t = new Date(this.#dir.now());
    // Synchronously, in slices: a 1 MiB-chunked disk's incremental asks about every chunk it keeps (inSyncSlices).
    const present = await inSyncSlices(checked, (id) => {
      if (this.#batch.has(id)) return true; // written by this process, durable before any manifest
      try {
        lutimesSync(this.#dir.chunkPath(id), t, t); // GC grace: a chunk a backup is about to name is young again
        this.#batch.known(id);
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
    const path = this.#dir.chunkPath(id);
    if (this.#batch.has(id)) return false;
    if (await lstatOrUndefined(path)) {
      const t = new Date(this.#dir.now());
      await lutimes(path, t, t).catch(() => undefined);
      this.#batch.known(id);
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
    const blob = await this.#dir.readChunk(id);
    if (!blob) throw new NotFoundError('chunk', id);
    return blob;
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
    await locks.run(this.#dir.root, async () => {
      await this.#batch.flush(this.#io); // every chunk it names durable before it is
      const sf = (await this.#dir.readStoreFile()) ?? { version: 1 as const };
      if (sf.keyFingerprint !== undefined && sf.keyFingerprint !== man.keyFingerprint) {
        throw new KeyMismatchError(
          `backup store ${this.config.name} holds snapshots of the backup key with fingerprint ${sf.keyFingerprint}; snapshot ${man.id} was made with ${man.keyFingerprint}: refused, nothing written`,
          `snapshot/${man.id}`,
        );
      }
      // Chunks this process flushed or found since the last GC or verify are known there; the rest are looked at.
      const ids = [...new Set(man.disks.flatMap((d) => d.chunks))].filter((id) => !this.#batch.knows(id));
      const there = await inSyncSlices(
        ids,
        (id) => lstatSyncOrUndefined(this.#dir.chunkPath(id))?.isFile() === true,
      );
      const lacking = ids.filter((_, i) => !there[i]);
      if (lacking.length > 0 && this.#batch.lastFailure) throw this.#batch.lastFailure; // e.g. the disk filled
      if (lacking.length > 0) {
        throw new InvalidStateError(
          `snapshot ${man.id} names ${lacking.length} chunk${lacking.length === 1 ? '' : 's'} backup store ${this.config.name} lacks (${lacking.slice(0, 3).join(', ')}${lacking.length > 3 ? ', ...' : ''}): refused, nothing written`,
          `snapshot/${man.id}`,
        );
      }
      const path = this.#dir.manifestPath(man.id);
      const existing = await this.#dir.readCapped(path, BACKUP_MANIFEST_MAX_BYTES, `snapshot ${man.id}`);
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
        await this.#dir.writeStoreFile({ ...sf, keyFingerprint: man.keyFingerprint });
      }
      await this.#dir.writeAtomic(path, text, `the manifest of snapshot ${man.id}`);
    });
  }

  async getManifest(id: SnapshotId): Promise<Manifest> {
    checkSnapshotId(id);
    const m = await this.#dir.loadManifest(id);
    if (!m) throw new NotFoundError('snapshot', id);
    return m;
  }

  /** Snapshots (oldest first by id), each with its last verify; a manifest that cannot be read is left out (verify
   * names it). */
  async list(vm?: string): Promise<SnapshotSummary[]> {
    if (vm !== undefined && (typeof vm !== 'string' || !VM_NAME.test(vm))) {
      throw new InvalidRequestError(`VM name ${JSON.stringify(vm)?.slice(0, 80)} is not a valid name`);
    }
    const out: SnapshotSummary[] = [];
    for (const id of await this.#dir.snapshotIds(vm)) {
      if (out.length >= BACKUP_SNAPSHOTS_LIST_MAX) break;
      const m = await this.#dir.loadManifest(id).catch(() => undefined);
      if (m) out.push(summaryOf(m, await this.#dir.readRecord(id)));
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  async deleteSnapshots(ids: SnapshotId[]): Promise<SnapshotId[]> {
    const checked = ids.map(checkSnapshotId);
    return locks.run(this.#dir.root, async () => {
      const deleted: SnapshotId[] = [];
      for (const id of new Set(checked)) {
        if (!(await this.#dir.removeSnapshot(id))) continue;
        deleted.push(id);
      }
      return deleted;
    });
  }

  // ---- Upkeep (chunk-store-upkeep.ts) ---------------------------------------------------------------------------

  async gc(graceMs: number): Promise<GcResult> {
    if (!Number.isFinite(graceMs) || graceMs < 0)
      throw new InvalidRequestError(`GC grace ${graceMs} ms is not a duration`);
    await this.#batch.flush(this.#io);
    return locks.run(this.#dir.root, async () => {
      try {
        return await collectGarbage(this.#dir, graceMs);
      } finally {
        this.#batch.forget(); // it removed chunk files
      }
    });
  }

  async verify(
    snapshots: SnapshotId[] | undefined,
    open?: OpenChunk,
    onProgress?: (done: number, total: number) => void,
  ): Promise<VerifyResult> {
    await this.#batch.flush(this.#io);
    const ids =
      snapshots === undefined ? await this.#dir.snapshotIds() : [...new Set(snapshots.map(checkSnapshotId))];
    try {
      return await verifySnapshots(this.#dir, ids, open, onProgress);
    } finally {
      this.#batch.forget(); // it may have moved bad chunks aside
    }
  }

  async status(): Promise<BackupStoreStatus> {
    await this.#batch.flush(this.#io);
    return storeStatus(this.#dir, this.config.offsite);
  }
}
