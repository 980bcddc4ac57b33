// Conformance suite every ChunkStore must pass (DirChunkStore today; an object-store backend later). It drives the
// store through its interface with real sealed chunks and signed manifests (shared/backup-crypto.ts), and needs from
// the backend only two ways to reach behind it: damage a stored chunk, and age one (GC grace). Call it from a test:
//   chunkStoreConformance('dir', async () => ({ make, corruptChunk, ageChunk, cleanup }));
import { describe, expect, it } from 'vitest';
import {
  BACKUP_BLOB_MAX_BYTES,
  BACKUP_CHUNK_BYTES,
  type ChunkId,
  type Manifest,
  type SnapshotId,
} from '../../shared/backup.js';
import { BackupKeySet, newBackupKey } from '../../shared/backup-crypto.js';
import {
  ConflictError,
  CorruptDataError,
  InvalidRequestError,
  InvalidStateError,
  KeyMismatchError,
  NotFoundError,
} from '../../shared/errors.js';
import type { ChunkStore } from './types.js';

/** What the suite needs from a backend. */
export interface ChunkStoreConformanceEnv {
  /** A new, empty store (each test gets its own). */
  make(): Promise<ChunkStore>;
  /** Damages a stored chunk's bytes, as a failing disk would. */
  corruptChunk(store: ChunkStore, id: ChunkId): Promise<void>;
  /** Makes a stored chunk look `ms` older than now (its GC age). */
  ageChunk(store: ChunkStore, id: ChunkId, ms: number): Promise<void>;
  cleanup(): Promise<void>;
}

/** A sealed chunk of `n` bytes filled from `seed` (distinct seeds, distinct chunks). */
export function sealedChunk(
  keys: BackupKeySet,
  seed: number,
  n = 64 * 1024,
): { id: ChunkId; plain: Buffer; blob: Buffer } {
  const plain = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4) plain.writeUInt32LE((seed * 2654435761 + i * 40503) >>> 0, i);
  const id = keys.chunkId(plain);
  return { id, plain, blob: keys.sealChunk(id, plain) };
}

/** A signed manifest of `vm` at `at` whose one disk is `chunks`. */
export function signedManifest(
  keys: BackupKeySet,
  vm: string,
  at: string,
  chunks: ChunkId[],
  extra: Partial<Manifest> = {},
): Manifest {
  const stamp = at.replace(/[-:]/g, '').replace(/\.\d+/, '');
  const body: Omit<Manifest, 'signature'> = {
    version: 1,
    id: `${vm}@${stamp}` as SnapshotId,
    vm,
    host: 'host1',
    policy: 'nightly',
    createdAt: at,
    finishedAt: at,
    consistency: 'frozen',
    keyFingerprint: keys.fingerprint,
    disks: [
      {
        name: 'root',
        sizeBytes: chunks.length * BACKUP_CHUNK_BYTES,
        chunkBytes: BACKUP_CHUNK_BYTES,
        chunks,
        mode: 'full',
        fullReason: 'first',
        readBytes: chunks.length * BACKUP_CHUNK_BYTES,
        newChunks: chunks.length,
        storedBytes: 0,
      },
    ],
    config: keys.sealConfig({ name: vm }),
    ...extra,
  };
  return { ...body, signature: keys.signManifest(body) };
}

const HOUR = 60 * 60 * 1000;

/** Registers the ChunkStore conformance suite (vitest describe/it). */
export function chunkStoreConformance(name: string, env: () => Promise<ChunkStoreConformanceEnv>): void {
  describe(`chunk store conformance: ${name}`, () => {
    const keys = BackupKeySet.fromKey(newBackupKey(), 'key-a');
    const other = BackupKeySet.fromKey(newBackupKey(), 'key-b');
    const withStore = (fn: (s: ChunkStore, e: ChunkStoreConformanceEnv) => Promise<void>) => async () => {
      const e = await env();
      try {
        await fn(await e.make(), e);
      } finally {
        await e.cleanup();
      }
    };

    it(
      'stores a chunk once, returns it byte for byte, and says which of a batch are missing (in order)',
      withStore(async (s) => {
        const a = sealedChunk(keys, 1);
        const b = sealedChunk(keys, 2);
        const c = sealedChunk(keys, 3);
        expect(await s.missing([a.id, b.id, c.id])).toEqual([a.id, b.id, c.id]);
        expect(await s.putChunk(a.id, a.blob)).toBe(true);
        expect(await s.putChunk(a.id, a.blob)).toBe(false);
        expect(await s.putChunk(c.id, c.blob)).toBe(true);
        expect(await s.missing([c.id, b.id, a.id])).toEqual([b.id]);
        const got = await s.getChunk(a.id);
        expect(got.equals(a.blob)).toBe(true);
        expect(keys.openChunk(a.id, got).equals(a.plain)).toBe(true);
        await expect(s.getChunk(b.id)).rejects.toBeInstanceOf(NotFoundError);
      }),
    );

    it(
      'refuses a blob whose checksum fails, an oversized one, and ids that are not ids; nothing is stored',
      withStore(async (s) => {
        const a = sealedChunk(keys, 4);
        const flipped = Buffer.from(a.blob);
        flipped[flipped.length - 1]! ^= 1;
        await expect(s.putChunk(a.id, flipped)).rejects.toBeInstanceOf(CorruptDataError);
        await expect(s.putChunk(a.id, Buffer.alloc(BACKUP_BLOB_MAX_BYTES + 1))).rejects.toBeInstanceOf(
          CorruptDataError,
        );
        await expect(s.putChunk(a.id, Buffer.from('VLCK'))).rejects.toBeInstanceOf(CorruptDataError);
        expect(await s.missing([a.id])).toEqual([a.id]);
        for (const bad of ['../../../etc/passwd', a.id.toUpperCase(), `${a.id}0`, '']) {
          await expect(s.putChunk(bad, a.blob)).rejects.toBeInstanceOf(InvalidRequestError);
          await expect(s.getChunk(bad)).rejects.toBeInstanceOf(InvalidRequestError);
          await expect(s.missing([bad])).rejects.toBeInstanceOf(InvalidRequestError);
        }
      }),
    );

    it(
      'takes a manifest only when it holds every chunk it names, then lists and returns it',
      withStore(async (s) => {
        const a = sealedChunk(keys, 5);
        const b = sealedChunk(keys, 6);
        await s.putChunk(a.id, a.blob);
        const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id, b.id, a.id]);
        await expect(s.putManifest(m)).rejects.toBeInstanceOf(InvalidStateError);
        expect(await s.list()).toEqual([]);
        expect((await s.status()).keyFingerprint).toBeUndefined();
        await s.putChunk(b.id, b.blob);
        await s.putManifest(m);
        await s.putManifest(m); // the same again (a retried pull): fine
        const back = await s.getManifest(m.id);
        expect(back).toEqual(m);
        keys.verifyManifest(back);
        const l = await s.list();
        expect(l.map((x) => x.id)).toEqual([m.id]);
        expect(l[0]!.disks[0]!.chunkCount).toBe(3);
        expect(l[0]!.keyFingerprint).toBe(keys.fingerprint);
        expect(l[0]!.verify).toBeUndefined();
        expect(await s.list('db')).toEqual([]);
        const st = await s.status();
        expect(st).toMatchObject({ keyFingerprint: keys.fingerprint, snapshots: 1, chunks: 2 });
        expect(st.storedBytes).toBe(a.blob.length + b.blob.length);
        expect(st.freeBytes).toBeGreaterThan(0);
        await expect(s.getManifest('web1@20261201T030000Z')).rejects.toBeInstanceOf(NotFoundError);
        await expect(s.getManifest('../x@20261201T030000Z')).rejects.toBeInstanceOf(InvalidRequestError);
      }),
    );

    it(
      'is bound to the key of its first snapshot: another key is refused and nothing is written',
      withStore(async (s) => {
        const a = sealedChunk(keys, 7);
        await s.putChunk(a.id, a.blob);
        await s.putManifest(signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]));
        const x = sealedChunk(other, 7);
        await s.putChunk(x.id, x.blob);
        const foreign = signedManifest(other, 'web1', '2026-12-01T03:00:00Z', [x.id]);
        const err = await s.putManifest(foreign).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(KeyMismatchError);
        expect((err as Error).message).toContain(keys.fingerprint);
        expect((err as Error).message).toContain(other.fingerprint);
        expect((await s.list()).map((x) => x.id)).toEqual(['web1@20261201T020000Z']);
        expect((await s.status()).keyFingerprint).toBe(keys.fingerprint);
      }),
    );

    it(
      'refuses a manifest that breaks its schema, or another manifest under an id it holds',
      withStore(async (s) => {
        const a = sealedChunk(keys, 8);
        await s.putChunk(a.id, a.blob);
        const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
        await expect(s.putManifest({ ...m, extra: 1 } as unknown as Manifest)).rejects.toBeInstanceOf(
          InvalidRequestError,
        );
        await expect(s.putManifest({ ...m, id: '../../x@20261201T020000Z' })).rejects.toBeInstanceOf(
          InvalidRequestError,
        );
        await expect(s.putManifest({ ...m, vm: 'db' })).rejects.toBeInstanceOf(InvalidRequestError);
        await s.putManifest(m);
        await expect(s.putManifest({ ...m, host: 'host2' })).rejects.toBeInstanceOf(ConflictError);
        expect(await s.getManifest(m.id)).toEqual(m);
      }),
    );

    it(
      'deletes snapshots (unknown ones ignored); their chunks go at the next GC past the grace period, shared ones stay',
      withStore(async (s, e) => {
        const [a, b, c] = [sealedChunk(keys, 9), sealedChunk(keys, 10), sealedChunk(keys, 11)];
        for (const x of [a, b, c]) await s.putChunk(x.id, x.blob);
        const m1 = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id, b.id]);
        const m2 = signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [b.id, c.id]);
        await s.putManifest(m1);
        await s.putManifest(m2);
        expect(await s.deleteSnapshots([m1.id, 'web1@20261201T040000Z'])).toEqual([m1.id]);
        expect((await s.list()).map((x) => x.id)).toEqual([m2.id]);
        expect(await s.missing([a.id])).toEqual([]); // still there (and touched)
        let r = await s.gc(HOUR);
        expect(r).toMatchObject({ chunksKept: 2, chunksRemoved: 0, chunksInGrace: 1 });
        await e.ageChunk(s, a.id, 2 * HOUR);
        await e.ageChunk(s, b.id, 2 * HOUR);
        r = await s.gc(HOUR);
        expect(r).toMatchObject({
          chunksKept: 2,
          chunksRemoved: 1,
          chunksInGrace: 0,
          bytesFreed: a.blob.length,
        });
        expect(await s.missing([a.id, b.id, c.id])).toEqual([a.id]);
        expect(await s.getManifest(m2.id)).toEqual(m2);
      }),
    );

    it(
      'keeps an old unnamed chunk a running backup has just asked about (missing() touches it)',
      withStore(async (s, e) => {
        const a = sealedChunk(keys, 12);
        await s.putChunk(a.id, a.blob);
        await e.ageChunk(s, a.id, 3 * HOUR);
        expect(await s.missing([a.id])).toEqual([]); // a backup about to name it
        expect(await s.gc(HOUR)).toMatchObject({ chunksRemoved: 0, chunksInGrace: 1 });
        await s.putManifest(signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]));
        await e.ageChunk(s, a.id, 3 * HOUR);
        expect(await s.gc(HOUR)).toMatchObject({ chunksKept: 1, chunksRemoved: 0 });
      }),
    );

    it(
      'verifies: a clean store passes and records it; a damaged chunk is named with every snapshot naming it',
      withStore(async (s, e) => {
        const [a, b, c] = [sealedChunk(keys, 13), sealedChunk(keys, 14), sealedChunk(keys, 15)];
        for (const x of [a, b, c]) await s.putChunk(x.id, x.blob);
        const m1 = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id, b.id]);
        const m2 = signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [b.id, c.id]);
        const m3 = signedManifest(keys, 'db', '2026-12-01T03:00:00Z', [c.id]);
        for (const m of [m1, m2, m3]) await s.putManifest(m);
        const seen: [number, number][] = [];
        let r = await s.verify(undefined, undefined, (d, t) => seen.push([d, t]));
        expect(r).toMatchObject({ snapshots: 3, chunksChecked: 3, deep: false, problems: [] });
        expect(r.bytesRead).toBe(a.blob.length + b.blob.length + c.blob.length);
        expect(seen.at(-1)).toEqual([3, 3]);
        expect((await s.list()).every((x) => x.verify?.ok === true)).toBe(true);

        r = await s.verify(undefined, (id, blob) => keys.openChunk(id, blob));
        expect(r).toMatchObject({ deep: true, problems: [] });

        await e.corruptChunk(s, b.id);
        r = await s.verify(undefined);
        expect(r.problems.map((p) => [p.snapshot, p.chunk]).sort()).toEqual(
          [
            [m1.id, b.id],
            [m2.id, b.id],
          ].sort(),
        );
        const l = await s.list();
        expect(l.find((x) => x.id === m1.id)!.verify).toMatchObject({ ok: false });
        expect(l.find((x) => x.id === m1.id)!.verify!.problems[0]).toContain(b.id);
        expect(l.find((x) => x.id === m3.id)!.verify).toMatchObject({ ok: true, problems: [] });

        r = await s.verify([m3.id]);
        expect(r).toMatchObject({ snapshots: 1, chunksChecked: 1, problems: [] });
        r = await s.verify(['web1@20261201T050000Z']);
        expect(r.problems).toHaveLength(1);
        expect(r.problems[0]!.snapshot).toBe('web1@20261201T050000Z');
      }),
    );

    it(
      'deep verify with the wrong key names every chunk, and leaves them in place',
      withStore(async (s) => {
        const a = sealedChunk(keys, 16);
        await s.putChunk(a.id, a.blob);
        const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
        await s.putManifest(m);
        const r = await s.verify(undefined, (id, blob) => other.openChunk(id, blob));
        expect(r.problems).toHaveLength(1);
        expect(r.problems[0]).toMatchObject({ snapshot: m.id, chunk: a.id });
        expect(r.problems[0]!.problem).toMatch(/authentication/);
        expect(await s.missing([a.id])).toEqual([]);
        expect((await s.verify(undefined)).problems).toEqual([]);
      }),
    );

    it(
      'takes two writers of one chunk at once, and a batch of writes in parallel',
      withStore(async (s) => {
        const a = sealedChunk(keys, 17);
        const again = { ...a, blob: keys.sealChunk(a.id, a.plain) }; // another IV: another valid blob
        const results = await Promise.all([s.putChunk(a.id, a.blob), s.putChunk(again.id, again.blob)]);
        expect(results.filter(Boolean).length).toBeGreaterThanOrEqual(1);
        expect(keys.openChunk(a.id, await s.getChunk(a.id)).equals(a.plain)).toBe(true);
        const many = Array.from({ length: 24 }, (_, i) => sealedChunk(keys, 100 + i, 4096));
        await Promise.all(many.map((x) => s.putChunk(x.id, x.blob)));
        expect(await s.missing(many.map((x) => x.id))).toEqual([]);
        expect((await s.status()).chunks).toBe(25);
      }),
    );
  });
}
