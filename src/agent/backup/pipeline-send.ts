// The streaming half of a backup (pipeline.ts's backupDisks): every chunk to read goes read -> id -> asked about ->
// sealed -> stored on its own, with a bounded number of chunks in flight, so that reading the next chunks overlaps
// sealing and storing the earlier ones (the sealing threads and the NBD server stay busy together) and no chunk waits
// for a whole window. `missing` is asked in batches of whatever ids are waiting when the previous answer arrives (one
// request in flight: a remote store sees few, large requests; a local one answers at once).
import type { NbdConnection } from '../../drivers/backup/types.js';
import { BACKUP_CHUNK_BYTES, BACKUP_IDS_PER_REQUEST_MAX, type ChunkId } from '../../shared/backup.js';
import { mapLimited } from '../../shared/queue.js';
import type { ChunkCodec, ChunkSink } from './pipeline.js';

/**
 * Chunks a backup holds at once, from their read to their store: at most this many 4 MiB plain buffers (and their
 * sealed blobs) in memory, 64 MiB; enough to keep reads, two or more sealing threads and the store's writes busy.
 */
export const BACKUP_CHUNKS_IN_FLIGHT = 16;

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
   * Reads chunks `indices` of the disk behind `nbd` (`size` bytes), setting `ids[i]` for each, and stores those the
   * sink lacks. Fails on the first error (chunks in flight finish or fail; none is started after it).
   */
  async sendDisk(nbd: NbdConnection, size: number, indices: number[], ids: string[]): Promise<SentFigures> {
    const out: SentFigures = { readBytes: 0, newChunks: 0, storedBytes: 0 };
    await mapLimited(indices, BACKUP_CHUNKS_IN_FLIGHT, async (i) => {
      const at = i * BACKUP_CHUNK_BYTES;
      const read = await nbd.read(at, Math.min(BACKUP_CHUNK_BYTES, size - at));
      const length = read.length; // identifying and sealing move buffers to other threads
      const { id, plain } = await this.codec.identify(read);
      ids[i] = id;
      let store = this.storing.get(id);
      if (!store) {
        store = this.store(id, plain, out);
        this.storing.set(id, store);
      }
      await store;
      out.readBytes += length;
      this.onChunk(length);
    });
    return out;
  }

  private async store(id: ChunkId, plain: Buffer, out: SentFigures): Promise<void> {
    if (!(await this.asker.lacks(id))) return;
    const blob = await this.codec.seal(id, plain);
    if (await this.sink.putChunk(id, blob)) {
      out.newChunks++;
      out.storedBytes += blob.length;
    }
  }
}
