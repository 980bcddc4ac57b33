// The streaming half of a backup (pipeline.ts's backupDisks): every chunk to read goes read -> id -> asked about ->
// sealed -> stored on its own, with a bounded number of chunks in flight, so that reading the next chunks overlaps
// sealing and storing the earlier ones (the sealing threads and the NBD server stay busy together) and no chunk waits
// for a whole window. `missing` is asked in batches of whatever ids are waiting when the previous answer arrives (one
// request in flight: a remote store sees few, large requests; a local one answers at once).
import type { NbdConnection } from '../../drivers/backup/types.js';
import {
  BACKUP_BLOB_MAX_BYTES,
  BACKUP_CHUNK_BYTES,
  BACKUP_IDS_PER_REQUEST_MAX,
  type ChunkId,
} from '../../shared/backup.js';
import { mapLimited } from '../../shared/queue.js';
import type { ChunkCodec, ChunkSink } from './pipeline.js';

/**
 * Chunks a backup holds at once, from their read to their store: at most this many buffers of a chunk's size (1 MiB
 * for new chains, 4 MiB in version-1 ones; each holds its chunk, then its sealed blob) in memory; enough to keep the NBD reads, two sealing threads and the store's writes
 * busy. Few on purpose: every buffer page a job writes after this process started a child (the storage daemon, any
 * command) takes a copy-on-write fault, ~50 us here, so each buffer in the pool costs ~1,000 faults per backup (16
 * plain and 16 blob buffers cost ~30 % of a 1 % round's CPU; docs/backup.md, "Measured").
 */
export const BACKUP_CHUNKS_IN_FLIGHT = 4;

/** How long a process keeps its idle chunk buffers for the next job (as the sealing threads). */
export const CHUNK_BUFFERS_IDLE_MS = 60_000;

/**
 * Buffers of one size kept for reuse. A fresh 4 MiB buffer costs ~1000 page faults when first written (here about
 * twice the CPU of sealing the chunk in it), so jobs read into, and seal into, the same few buffers again and again.
 * At most `max` are kept, and none once `idleMs` passed without a `take`.
 */
export class BufferPool {
  private free: Buffer[] = [];
  private idle: NodeJS.Timeout | undefined;
  constructor(
    readonly size: number,
    private readonly max: number,
    private readonly idleMs = CHUNK_BUFFERS_IDLE_MS,
  ) {}

  /** A whole buffer of `size` bytes (reused, or new), its content undefined. */
  take(): Buffer {
    clearTimeout(this.idle);
    this.idle = undefined;
    return this.free.pop() ?? Buffer.from(new ArrayBuffer(this.size));
  }

  /**
   * Gives back the buffer `view` is a view of, for reuse: kept only when it is a whole buffer of this pool's size.
   * The caller must be done with it (no reference to it used again).
   */
  give(view: Buffer | undefined): void {
    if (!view || !(view.buffer instanceof ArrayBuffer) || view.buffer.byteLength !== this.size) return;
    if (this.free.length < this.max) this.free.push(Buffer.from(view.buffer));
    if (!this.idle) {
      this.idle = setTimeout(() => {
        this.free = [];
        this.idle = undefined;
      }, this.idleMs);
      this.idle.unref();
    }
  }

  /** Buffers kept now. */
  get kept(): number {
    return this.free.length;
  }
}

/**
 * This process's chunk buffers, shared by its jobs, one pool per chunk size: each buffer holds a chunk as read, then
 * its sealed blob (sealed in place, over the plaintext: one buffer per chunk in flight, half the pages a plain and a
 * blob buffer each would fault), so it has room for the largest blob of a chunk of that size.
 */
const chunkBuffers = new Map<number, BufferPool>();

/** The pool of buffers for chunks of `chunkBytes` (a blob's head and room to spare past the chunk). */
export function chunkBuffersFor(chunkBytes: number): BufferPool {
  let pool = chunkBuffers.get(chunkBytes);
  if (!pool) {
    pool = new BufferPool(chunkBytes + BACKUP_BLOB_MAX_BYTES - BACKUP_CHUNK_BYTES, BACKUP_CHUNKS_IN_FLIGHT);
    chunkBuffers.set(chunkBytes, pool);
  }
  return pool;
}

/** Asks `sink.missing` for ids as they come, batching those that arrive while an answer is awaited. */
class MissingAsker {
  private waiting: Array<{ id: ChunkId; resolve: (lacking: boolean) => void; reject: (e: unknown) => void }> =
    [];
  private running = false;

  constructor(private readonly sink: ChunkSink) {}

  /** Whether the store lacks `id` (asking touches a present one: GC grace). */
  lacks(id: ChunkId): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ id, resolve, reject });
      if (!this.running) void this.pump();
    });
  }

  private async pump(): Promise<void> {
    this.running = true;
    try {
      while (this.waiting.length > 0) {
        const batch = this.waiting.splice(0, BACKUP_IDS_PER_REQUEST_MAX);
        try {
          const lacking = new Set(await this.sink.missing([...new Set(batch.map((w) => w.id))]));
          for (const w of batch) w.resolve(lacking.has(w.id));
        } catch (e) {
          for (const w of batch) w.reject(e);
        }
      }
    } finally {
      this.running = false;
    }
  }
}

/** What one disk's chunks added. */
export interface SentFigures {
  readBytes: number;
  newChunks: number;
  storedBytes: number;
}

/** Sends chunks of one job's disks into its sink; chunks with one id are sealed and stored once per job. */
export class ChunkSender {
  private readonly asker: MissingAsker;
  /** Each id's store (or finding it present), started by the first chunk with that id. */
  private readonly storing = new Map<ChunkId, Promise<void>>();

  constructor(
    private readonly sink: ChunkSink,
    private readonly codec: ChunkCodec,
    /** Called with each chunk's length once it is stored (or known present). */
    private readonly onChunk: (length: number) => void,
  ) {
    this.asker = new MissingAsker(sink);
  }

  /**
   * Reads chunks `indices` of the disk behind `nbd` (`size` bytes cut at every `chunkBytes`), setting `ids[i]` for
   * each, and stores those the sink lacks. Fails on the first error (chunks in flight finish or fail; none is started
   * after it).
   */
  async sendDisk(
    nbd: NbdConnection,
    size: number,
    chunkBytes: number,
    indices: number[],
    ids: string[],
  ): Promise<SentFigures> {
    const out: SentFigures = { readBytes: 0, newChunks: 0, storedBytes: 0 };
    const buffers = chunkBuffersFor(chunkBytes);
    await mapLimited(indices, BACKUP_CHUNKS_IN_FLIGHT, async (i) => {
      const at = i * chunkBytes;
      const home = buffers.take();
      const read = await nbd.read(at, Math.min(chunkBytes, size - at), home);
      const length = read.length; // identifying and sealing move buffers to other threads
      const { id, plain } = await this.codec.identify(read, home);
      ids[i] = id;
      let store = this.storing.get(id);
      if (!store) {
        store = this.store(id, plain, out, buffers);
        this.storing.set(id, store);
      } else buffers.give(plain);
      await store;
      out.readBytes += length;
      this.onChunk(length);
    });
    return out;
  }

  private async store(id: ChunkId, plain: Buffer, out: SentFigures, buffers: BufferPool): Promise<void> {
    if (!(await this.asker.lacks(id))) {
      buffers.give(plain);
      return;
    }
    // In place: the blob is built over the plaintext, in the whole buffer `plain` is a view of.
    const { blob } = await this.codec.sealInto(id, plain, Buffer.from(plain.buffer));
    if (await this.sink.putChunk(id, blob)) {
      out.newChunks++;
      out.storedBytes += blob.length;
    }
    // The sink is done with the blob once its put is answered (a store wrote it, a store's agent received it).
    buffers.give(blob);
  }
}
