// Backup building blocks on a host (issue 12, docs/backup.md): an NBD client that reads a disk view and writes a
// restore target, and a chunk store on a directory. The agent composes them (agent/backup/); the crypto and codec
// they share with the controller live in shared/backup-crypto.ts.
import type {
  BackupStoreConfig,
  BackupStoreStatus,
  ChunkId,
  GcResult,
  Manifest,
  SnapshotId,
  SnapshotSummary,
  VerifyResult,
} from '../../shared/backup.js';

/** One extent of an NBD block-status answer. */
export interface NbdExtent {
  offset: number;
  length: number;
  /** For `base:allocation`: bit 0 hole, bit 1 zero. For `qemu:dirty-bitmap:*`: bit 0 dirty. */
  flags: number;
}

/** A connected NBD client (newstyle fixed handshake, structured replies), bounded against what the server sends. */
export interface NbdConnection {
  readonly exportName: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Reads `length` bytes at `offset` (at most 32 MiB per call). */
  /** `into`: a buffer of at least `length` bytes to read into (the answer is a view of it). */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** Writes `data` at `offset`; refused on a read-only export. */
  write(offset: number, data: Buffer): Promise<void>;
  /** Writes zeroes (NBD_CMD_WRITE_ZEROES, punching holes where the server can). */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Extents of `context` (one negotiated at connect) over [offset, offset+length), covering it in order. */
  blockStatus(context: string, offset: number, length: number): Promise<NbdExtent[]>;
  flush(): Promise<void>;
  /** NBD_CMD_DISC and closes the socket. */
  close(): Promise<void>;
}

/** Options to connect to an NBD server on a unix socket. */
export interface NbdConnectOptions {
  socket: string;
  exportName: string;
  /** Meta contexts to negotiate (`base:allocation`, `qemu:dirty-bitmap:NAME`); refused when the server lacks one. */
  contexts?: string[];
  timeoutMs?: number;
}

/** A chunk store in a directory on the store host (never sees a key). */
export interface ChunkStore {
  readonly config: BackupStoreConfig;
  // Chunks.
  /** Which of `ids` the store lacks; present ones get their time touched (GC grace). */
  missing(ids: ChunkId[]): Promise<ChunkId[]>;
  /** Stores a blob (checksum checked against its header, written atomically); false when it was there already. */
  putChunk(id: ChunkId, blob: Buffer): Promise<boolean>;
  /** A stored blob; `NotFoundError` naming it. */
  getChunk(id: ChunkId): Promise<Buffer>;
  // Snapshots.
  /** Writes a manifest last and atomically, after checking every chunk it names is present and its key matches the
   * store's (`KeyMismatchError` otherwise; the first snapshot binds the store to its key). */
  putManifest(m: Manifest): Promise<void>;
  getManifest(id: SnapshotId): Promise<Manifest>;
  list(vm?: string): Promise<SnapshotSummary[]>;
  /** Deletes snapshots' manifests (chunks go at the next GC). */
  deleteSnapshots(ids: SnapshotId[]): Promise<SnapshotId[]>;
  // Upkeep.
  /** Mark and sweep: removes chunks no manifest names and older than `graceMs`. */
  gc(graceMs: number): Promise<GcResult>;
  /** Re-reads every chunk of the named (default all) snapshots; with `open` (the key's chunk opener) also decrypts
   * and re-derives ids. Records each snapshot's outcome in its summary. */
  verify(
    snapshots: SnapshotId[] | undefined,
    open?: (id: ChunkId, blob: Buffer) => Buffer,
    onProgress?: (done: number, total: number) => void,
  ): Promise<VerifyResult>;
  status(): Promise<BackupStoreStatus>;
}
