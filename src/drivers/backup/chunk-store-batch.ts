// Chunk writes of the directory store (chunk-store.ts) made durable in batches: a chunk is written to a file of its
// own in tmp/ at once, and a batch of them is later fsynced together, renamed to their names and their directories
// fsynced once each. One fsync and one directory fsync per 4 MiB chunk cost ~45 ms here against ~8 ms in a batch of
// ten (the journal commits them together). The crash guarantee stays: a chunk takes its name only once its bytes are
// durable, and the store flushes the batch before it writes a manifest (or reads, sweeps or counts chunks), so a
// manifest never names a chunk that is not durable. A crash before a flush leaves files in tmp/ that the next open
// removes (their writer is gone): those chunks are simply missing, and the next backup sends them.
import { constants } from 'node:fs';
import { type FileHandle, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { ChunkId } from '../../shared/backup.js';
import { mapLimited } from '../../shared/queue.js';
import { fsyncDir } from './chunk-store-files.js';

/** A batch is flushed once it holds this many chunks or bytes (what a crash may cost, and tmp/'s share of the disk). */
export const STAGED_CHUNKS_MAX = 32;
export const STAGED_BYTES_MAX = 128 * 1024 * 1024;
/**
 * Files fsynced (or directories) at once in a flush. Each holds one of libuv's 4 pool threads, so the writer's next
 * chunk writes wait behind a flush running beside them; yet 2 at once behind the writer measured no better for a 1 %
 * round and slower for a full backup (2 GiB: 13.4 vs 10.6 s and 18.9 vs 15.4 s, one A/B sample each at load 5-9), so
 * every flush uses 16.
 */
const SYNC_PARALLEL = 16;
/** Most chunk ids a store directory remembers as durable (`knows`; ~100 bytes each). */
const KNOWN_CHUNKS_MAX = 65_536;

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

interface Staged {
  tmp: string;
  final: string;
  bytes: number;
}

/** How the calling store writes files (its test seam) and names a failed write's error. */
export interface StageIo {
  write: (fh: FileHandle, data: Buffer) => Promise<void>;
  /** The error to throw for a failed write or sync (ENOSPC -> StoreFullError). */
  fsError: (e: unknown, what: string) => unknown;
}

/** The staged chunk writes of one store directory (every store object of a path in this process shares it). */
export class ChunkBatch {
  /** Written, not yet durable. */
  readonly #staged = new Map<ChunkId, Staged>();
  /** Being flushed now: neither in tmp/ for long nor yet under their names. */
  readonly #flushing = new Set<ChunkId>();
  #bytes = 0;
  /** Every flush started so far, settled (a flush also waits for those before it). */
  #running: Promise<void> = Promise.resolve();
  /** Flushes running now (a success clears `lastFailure` only when it ran alone). */
  #inFlight = 0;
  /** The last flush's failure, for a manifest refused because it names chunks that flush lost. */
  lastFailure: Error | undefined;
  /** A full batch syncing while its writer went on (`stage`). */
  #syncing = false;
  /** That sync's failure, not yet thrown to a writer: the next `stage` throws it. */
  #unreported: Error | undefined;

  /** `root`: the store's directory (its tmp/ and chunks/ are below it). */
  constructor(private readonly root: string) {}

  /** Whether chunk `id` is written or being made durable by this process (present, as far as a backup cares). */
  has(id: ChunkId): boolean {
    return this.#staged.has(id) || this.#flushing.has(id);
  }

  /**
   * Writes `blob` as chunk `id`'s file in tmp/ (no fsync) and stages it under `final`; false when it is staged
   * already. A full batch starts its flush and the writer goes on (the fsyncs overlap its next reads: ~60-90 ms of a
   * 1 % round's pipeline here); when the previous full batch is still syncing, the writer waits for both (the
   * backpressure of a slow disk). A failure of such a flush is thrown by the next `stage` (and a manifest naming its
   * chunks is refused with it), so a backup still fails with the store's error.
   */
  async stage(id: ChunkId, final: string, blob: Buffer, random: string, io: StageIo): Promise<boolean> {
    const failed = this.#unreported;
    this.#unreported = undefined;
    if (failed) throw failed;
    if (this.has(id)) return false;
    const tmp = join(this.root, 'tmp', `${id}.${process.pid}.${random}`);
    try {
      const fh = await open(tmp, WRITE_FLAGS, FILE_MODE);
      try {
        await io.write(fh, blob);
      } finally {
        await fh.close();
      }
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw io.fsError(e, `chunk ${id}`);
    }
    if (this.has(id)) {
      // Another writer of the same chunk staged it meanwhile: one is enough.
      await rm(tmp, { force: true }).catch(() => undefined);
      return false;
    }
    this.#staged.set(id, { tmp, final, bytes: blob.length });
    this.#bytes += blob.length;
    if (this.#staged.size >= STAGED_CHUNKS_MAX || this.#bytes >= STAGED_BYTES_MAX) {
      const run = this.flush(io);
      if (this.#syncing) await run;
      else {
        this.#syncing = true;
        run
          .catch((e: unknown) => {
            this.#unreported = e instanceof Error ? e : new Error(String(e));
          })
          .finally(() => {
            this.#syncing = false;
          });
      }
    }
    return true;
  }

  /**
   * Makes every chunk staged so far durable under its name: each file fsynced, renamed, then each directory that
   * got one fsynced once (and chunks/, which may have new prefix directories). On a failure the batch's files are
   * removed (those chunks are missing again) and the error thrown. It starts at once, beside a flush already running
   * behind the writer (other files), and resolves when both are done: a manifest waits for the chunks staged since
   * that flush started, not for that flush first and then them.
   */
  flush(io: Pick<StageIo, 'fsError'>): Promise<void> {
    const before = this.#running;
    const mine = this.#flushNow(io);
    const settled = mine.catch(() => undefined);
    this.#running = Promise.all([before, settled]).then(() => undefined);
    return Promise.all([before, mine]).then(() => undefined);
  }

  /** Chunks this process knows to be durable under their names (see `knows`). */
  readonly #known = new Set<ChunkId>();

  /**
   * Whether this process made chunk `id` durable under its name (a flush), or found it there (`known`) since the
   * last `forget`: a manifest's presence check asks the filesystem only about the others (at 1 MiB chunks a 2 GiB
   * disk's manifest names 2,048: 18-43 ms of lstat a round here). Only this process removes chunk files (GC's
   * sweep, verify moving a bad one aside), and each calls `forget` when it does.
   */
  knows(id: ChunkId): boolean {
    return this.#known.has(id);
  }

  /** Records that chunk `id` was just found durable under its name (e.g. touched by `missing`). */
  known(id: ChunkId): void {
    if (this.#known.size >= KNOWN_CHUNKS_MAX) this.#known.clear(); // a bound on memory; the filesystem answers instead
    this.#known.add(id);
  }

  /** Drops what `knows` remembers: chunk files were (or may have been) removed. */
  forget(): void {
    this.#known.clear();
  }

  async #flushNow(io: Pick<StageIo, 'fsError'>): Promise<void> {
    if (this.#staged.size === 0) return;
    this.#inFlight++;
    const batch = [...this.#staged.entries()];
    this.#staged.clear();
    this.#bytes = 0;
    for (const [id] of batch) this.#flushing.add(id);
    try {
      await mapLimited(batch, SYNC_PARALLEL, async ([, s]) => {
        const fh = await open(s.tmp, constants.O_WRONLY | constants.O_NOFOLLOW);
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      });
      const dirs = new Set<string>();
      for (const [, s] of batch) {
        await mkdir(dirname(s.final), { recursive: true, mode: DIR_MODE });
        // Two writers of one chunk both land a valid blob: the rename is atomic, the last one stays.
        await rename(s.tmp, s.final);
        dirs.add(dirname(s.final));
      }
      dirs.add(join(this.root, 'chunks'));
      await mapLimited([...dirs], SYNC_PARALLEL, fsyncDir);
      for (const [id] of batch) this.known(id);
      // Kept for the manifest that names the lost chunks (of this flush's failed neighbour, too).
      if (!this.#unreported && this.#inFlight === 1) this.lastFailure = undefined;
    } catch (e) {
      await Promise.all(batch.map(([, s]) => rm(s.tmp, { force: true }).catch(() => undefined)));
      const err = io.fsError(
        e,
        `${batch.length} chunk${batch.length === 1 ? '' : 's'} (${basename(batch[0]![1].final)}, ...)`,
      );
      this.lastFailure = err instanceof Error ? err : new Error(String(err));
      throw err;
    } finally {
      this.#inFlight--;
      for (const [id] of batch) this.#flushing.delete(id);
    }
  }
}

const batches = new Map<string, ChunkBatch>();

/** The batch of store directory `root` in this process (made on first use). */
export function chunkBatchOf(root: string): ChunkBatch {
  let b = batches.get(root);
  if (!b) {
    b = new ChunkBatch(root);
    batches.set(root, b);
  }
  return b;
}
