// An offsite store's pull (docs/backup.md, "Offsite"): its own agent lists the source store's snapshots, fetches the
// manifests it lacks, asks its own store which chunks are missing and fetches only those (each blob's checksum is
// checked by the store as it is written), then writes the manifests; then its own retention. Nothing here deletes
// from the source, and nothing from the source can delete here but this store's own retention.
import type { ChunkStore } from '../../drivers/backup/types.js';
import {
  BACKUP_IDS_PER_REQUEST_MAX,
  BACKUP_TRANSFER_CONCURRENCY,
  type ChunkId,
  type Manifest,
  type PullResult,
  type RetentionRules,
  type SnapshotId,
  type SnapshotSummary,
} from '../../shared/backup.js';
import { CorruptDataError, KeyMismatchError, VmlinkError } from '../../shared/errors.js';
import { mapLimited } from '../../shared/queue.js';
import type { Progress } from './pipeline.js';

/** What a pull reads of the source store (a StoreClient). */
export interface PullSource {
  readonly loc: { store: string; host: string };
  list(vm?: string): Promise<SnapshotSummary[]>;
  getManifest(id: SnapshotId): Promise<Manifest>;
  getChunk(id: ChunkId): Promise<Buffer>;
}

/** Which snapshots retention removes (shared/backup-retention.ts's applyRetention). */
export type RetentionFn = (
  snapshots: Array<{ id: SnapshotId; at: Date }>,
  rules: RetentionRules,
) => { remove: SnapshotId[] };

/** Options of one pull. */
export interface PullOptions {
  /** Only these snapshots (absent: every one the source has and this store lacks). */
  snapshots?: SnapshotId[] | undefined;
  retention?: { rules: RetentionRules; apply: RetentionFn } | undefined;
  progress?: Progress;
}

/** Pulls from `source` into `dest`; returns what crossed (and, with retention, what was pruned after). */
export async function pullSnapshots(
  dest: ChunkStore,
  source: PullSource,
  opts: PullOptions = {},
): Promise<PullResult & { pruned: SnapshotId[] }> {
  const from = `store ${source.loc.store} on ${source.loc.host}`;
  const have = new Set((await dest.list()).map((s) => s.id));
  const asked = opts.snapshots ? new Set(opts.snapshots) : undefined;
  const wanted = (await source.list())
    .filter((s) => !have.has(s.id) && (!asked || asked.has(s.id)))
    .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
  const bound = (await dest.status()).keyFingerprint;
  const result: PullResult & { pruned: SnapshotId[] } = {
    store: dest.config.name,
    from: source.loc.store,
    snapshotsPulled: [],
    chunksFetched: 0,
    bytesFetched: 0,
    chunksAlreadyThere: 0,
    pruned: [],
  };
  let done = 0;
  opts.progress?.(0, wanted.length);
  for (const s of wanted) {
    const m = await source.getManifest(s.id);
    // Refused before a chunk crosses: the store would refuse the manifest at the end anyway.
    const fp = bound ?? (await dest.status()).keyFingerprint;
    if (fp && m.keyFingerprint !== fp)
      throw new KeyMismatchError(
        `snapshot ${m.id} of ${from} was made with key ${m.keyFingerprint}; store ${dest.config.name} holds key ${fp}'s snapshots: nothing of it was pulled`,
        `snapshot/${m.id}`,
      );
    const ids = [...new Set(m.disks.flatMap((d) => d.chunks))];
    const lacking: ChunkId[] = [];
    for (let i = 0; i < ids.length; i += BACKUP_IDS_PER_REQUEST_MAX)
      lacking.push(...(await dest.missing(ids.slice(i, i + BACKUP_IDS_PER_REQUEST_MAX))));
    result.chunksAlreadyThere += ids.length - lacking.length;
    await mapLimited(lacking, BACKUP_TRANSFER_CONCURRENCY, async (id) => {
      const blob = await source.getChunk(id);
      try {
        await dest.putChunk(id, blob);
      } catch (e) {
        if (e instanceof VmlinkError && e.kind === 'corrupt')
          throw new CorruptDataError(
            `chunk ${id} of snapshot ${m.id} from ${from} is damaged (${e.message}): nothing of that snapshot was pulled`,
            `snapshot/${m.id}`,
          );
        throw e;
      }
      result.chunksFetched++;
      result.bytesFetched += blob.length;
    });
    await dest.putManifest(m);
    result.snapshotsPulled.push(m.id);
    opts.progress?.(++done, wanted.length);
  }
  if (opts.retention) {
    // Per VM, as restic groups by host and paths.
    const byVm = new Map<string, Array<{ id: SnapshotId; at: Date }>>();
    for (const s of await dest.list()) {
      const list = byVm.get(s.vm) ?? [];
      list.push({ id: s.id, at: new Date(s.createdAt) });
      byVm.set(s.vm, list);
    }
    const remove = [...byVm.values()].flatMap((l) => opts.retention!.apply(l, opts.retention!.rules).remove);
    if (remove.length) result.pruned = await dest.deleteSnapshots(remove);
  }
  return result;
}
