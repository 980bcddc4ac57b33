// The upkeep of a directory chunk store (chunk-store.ts): garbage collection (mark every chunk a manifest names, sweep
// the rest past a grace period), verify (re-read every chunk the snapshots name, once however many share it; with a key,
// open it too; record each snapshot's outcome) and status (counts and free space). The caller holds the store's lock
// and has flushed its staged chunks.
import { rename, rm, statfs } from 'node:fs/promises';
import { basename } from 'node:path';
import type {
  BackupStoreStatus,
  ChunkId,
  GcResult,
  Manifest,
  SnapshotId,
  VerifyResult,
} from '../../shared/backup.js';
import { blobProblem } from '../../shared/backup-crypto.js';
import { CorruptDataError, VmlinkError } from '../../shared/errors.js';
import { mapLimited } from '../../shared/queue.js';
import type { StoreDir } from './chunk-store-dir.js';
import { lstatOrUndefined } from './chunk-store-files.js';
import { RECORD_PROBLEMS_MAX, type VerifyRecord } from './chunk-store-records.js';

/** Chunks read and checked at once by verify. */
const VERIFY_PARALLEL = 4;
/** Most problems one verify returns, and one snapshot's record keeps. */
const VERIFY_PROBLEMS_MAX = 1000;

/** What opens a blob with the key (deep verify): throws when it does not open as chunk `id`. */
export type OpenChunk = (id: ChunkId, blob: Buffer) => Buffer;

/** Removes chunks no manifest names and older than `graceMs`, and tmp/ leftovers. One manifest that cannot be read
 * stops it before anything is removed: its chunks are unknown. */
export async function collectGarbage(dir: StoreDir, graceMs: number): Promise<GcResult> {
  const marked = new Set<ChunkId>();
  for (const id of await dir.snapshotIds()) {
    let m: Manifest | undefined;
    try {
      m = await dir.loadManifest(id);
    } catch (e) {
      throw new CorruptDataError(
        `backup store ${dir.name}: GC stopped, nothing removed: ${(e as Error).message}`,
        `snapshot/${id}`,
      );
    }
    for (const d of m?.disks ?? []) for (const c of d.chunks) marked.add(c);
  }
  const res: GcResult = { store: dir.name, chunksKept: 0, chunksRemoved: 0, bytesFreed: 0, chunksInGrace: 0 };
  const cutoff = dir.now() - graceMs;
  for await (const f of dir.chunkFiles()) {
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
  await dir.cleanTmp();
  return res;
}

/** Re-reads every chunk `ids` name (each once), checks its keyless checksum and with `open` that it opens, and writes
 * each snapshot's outcome as its verify record. */
export async function verifySnapshots(
  dir: StoreDir,
  ids: SnapshotId[],
  open?: OpenChunk,
  onProgress?: (done: number, total: number) => void,
): Promise<VerifyResult> {
  const res: VerifyResult = {
    store: dir.name,
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
      m = await dir.loadManifest(id);
    } catch (e) {
      note(id, undefined, (e as Error).message);
      continue;
    }
    if (!m) {
      note(id, undefined, `snapshot ${id} is not in backup store ${dir.name}`);
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
    const problem = await checkChunk(dir, c, open, (n) => {
      res.bytesRead += n;
    });
    res.chunksChecked++;
    if (problem !== undefined) for (const s of users.get(c)!) note(s, c, problem);
    onProgress?.(++done, chunks.length);
  });
  const at = new Date(dir.now()).toISOString();
  for (const [id, problems] of perSnapshot) {
    if (!(await lstatOrUndefined(dir.manifestPath(id)))) continue; // no record of a snapshot the store lacks
    const rec: VerifyRecord = { ok: problems.length === 0, at, problems };
    await dir.writeRecord(id, rec);
  }
  return res;
}

/** What is wrong with a stored chunk (missing, checksum, and with `open` decryption and id); undefined when fine. A
 * chunk whose keyless checksum fails is moved aside (`<id>.bad`), so the next backup that has the data sends it
 * again; one that only fails to open is left (a wrong key must not move good chunks). */
async function checkChunk(
  dir: StoreDir,
  id: ChunkId,
  open: OpenChunk | undefined,
  read: (n: number) => void,
): Promise<string | undefined> {
  let blob: Buffer | undefined;
  try {
    blob = await dir.readChunk(id);
  } catch (e) {
    return `unreadable: ${(e as Error).message}`;
  }
  if (!blob) return 'missing from the store';
  read(blob.length);
  const problem = blobProblem(blob);
  if (problem !== undefined) {
    const path = dir.chunkPath(id);
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

/** The store's key fingerprint, snapshot and chunk counts, stored bytes and free space. */
export async function storeStatus(dir: StoreDir, offsite: boolean): Promise<BackupStoreStatus> {
  const sf = await dir.readStoreFile();
  let chunks = 0;
  let storedBytes = 0;
  for await (const f of dir.chunkFiles()) {
    if (f.bad) continue;
    const st = await lstatOrUndefined(f.path);
    if (!st?.isFile()) continue;
    chunks++;
    storedBytes += st.size;
  }
  const fs = await statfs(dir.root);
  return {
    name: dir.name,
    offsite,
    ...(sf?.keyFingerprint === undefined ? {} : { keyFingerprint: sf.keyFingerprint }),
    snapshots: (await dir.snapshotIds()).length,
    chunks,
    storedBytes,
    freeBytes: Number(fs.bavail) * Number(fs.bsize),
  };
}
