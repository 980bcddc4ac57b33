// Batched durable chunk writes (chunk-store-batch.ts) through the directory store: a chunk takes its name only at a
// flush, a manifest flushes first (so it never names a chunk that is not durable), a full batch flushes by itself
// behind the writer (its failure thrown by the next write), a failed flush leaves those chunks missing and the
// manifest refused, and blobs sealed here skip the checksum
// while a copy of the same bytes (as from the network) is checked.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BackupKeySet, newBackupKey } from '../../shared/backup-crypto.js';
import { sealedHere } from '../../shared/backup-sealed.js';
import { CorruptDataError } from '../../shared/errors.js';
import { DirChunkStore } from './chunk-store.js';
import { STAGED_CHUNKS_MAX } from './chunk-store-batch.js';
import { sealedChunk, signedManifest } from './conformance-store.js';

describe('DirChunkStore batched chunk writes', () => {
  const keys = BackupKeySet.fromKey(newBackupKey(), 'key-a');
  let dir: string;
  let root: string;
  const named = async () =>
    (
      await Promise.all((await readdir(join(root, 'chunks'))).map((p) => readdir(join(root, 'chunks', p))))
    ).flat();
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-chunkbatch-'));
    root = join(dir, 'store');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('a chunk waits in tmp/ until a manifest flushes it; the manifest lands after it', async () => {
    const s = await DirChunkStore.open({ name: 'site', path: root, offsite: false });
    const a = sealedChunk(keys, 1);
    expect(await s.putChunk(a.id, a.blob)).toBe(true);
    expect(await s.putChunk(a.id, a.blob)).toBe(false); // staged already
    expect(await named()).toEqual([]);
    expect(await readdir(join(root, 'tmp'))).toHaveLength(1);
    expect(await s.missing([a.id])).toEqual([]); // present as far as a backup cares
    const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m);
    expect(await named()).toEqual([a.id]);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
    expect(await s.getManifest(m.id)).toEqual(m);
  });

  it(`a batch of ${STAGED_CHUNKS_MAX} chunks flushes by itself while the writer goes on`, async () => {
    const s = await DirChunkStore.open({ name: 'site', path: root, offsite: false });
    const chunks = Array.from({ length: STAGED_CHUNKS_MAX }, (_, i) => sealedChunk(keys, 100 + i));
    for (const c of chunks.slice(0, -1)) await s.putChunk(c.id, c.blob);
    expect(await named()).toEqual([]);
    await s.putChunk(chunks.at(-1)!.id, chunks.at(-1)!.blob);
    await vi.waitFor(async () => expect((await named()).sort()).toEqual(chunks.map((c) => c.id).sort()));
  });

  it('a manifest flushed beside a batch syncing behind the writer lands once both are durable', async () => {
    const s = await DirChunkStore.open({ name: 'site', path: root, offsite: false });
    const chunks = Array.from({ length: STAGED_CHUNKS_MAX + 3 }, (_, i) => sealedChunk(keys, 300 + i));
    for (const c of chunks) await s.putChunk(c.id, c.blob); // the first 32 start syncing; 3 wait
    const m = signedManifest(
      keys,
      'web1',
      '2026-12-01T02:00:00Z',
      chunks.map((c) => c.id),
    );
    await s.putManifest(m);
    expect((await named()).sort()).toEqual(chunks.map((c) => c.id).sort());
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
    expect(await s.getManifest(m.id)).toEqual(m);
  });

  it('a manifest skips the presence check of chunks known durable, until a GC or verify may have removed some', async () => {
    const s = await DirChunkStore.open({ name: 'site', path: root, offsite: false });
    const [a, b] = [sealedChunk(keys, 7), sealedChunk(keys, 8)];
    await s.putChunk(a.id, a.blob);
    await s.putChunk(b.id, b.blob);
    await s.putManifest(signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id, b.id]));
    await rm(join(root, 'chunks', b.id.slice(0, 4), b.id)); // lost behind the store's back
    expect((await s.verify(undefined)).problems).toHaveLength(1); // verify finds it, and the store forgets
    await expect(
      s.putManifest(signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [a.id, b.id])),
    ).rejects.toThrow(/lacks/);
    expect(await s.missing([a.id, b.id])).toEqual([b.id]);
  });

  it('a batch that fails to flush behind the writer fails its next chunk, and the manifest naming it', async () => {
    const s = await DirChunkStore.open({ name: 'site', path: root, offsite: false });
    const chunks = Array.from({ length: STAGED_CHUNKS_MAX + 1 }, (_, i) => sealedChunk(keys, 200 + i));
    for (const c of chunks.slice(0, STAGED_CHUNKS_MAX - 1)) await s.putChunk(c.id, c.blob);
    for (const f of await readdir(join(root, 'tmp'))) await rm(join(root, 'tmp', f)); // lost before their fsync
    await s.putChunk(chunks[STAGED_CHUNKS_MAX - 1]!.id, chunks[STAGED_CHUNKS_MAX - 1]!.blob);
    await vi.waitFor(async () => expect(await readdir(join(root, 'tmp'))).toEqual([])); // the batch removed
    const last = chunks.at(-1)!;
    await expect(s.putChunk(last.id, last.blob)).rejects.toThrow(/ENOENT/);
    const ids = chunks.slice(0, 2).map((c) => c.id);
    expect(await s.missing(ids)).toEqual(ids);
    await expect(s.putManifest(signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', ids))).rejects.toThrow(
      /ENOENT/,
    );
    expect(await s.list()).toEqual([]);
  });

  it('a flush that fails leaves its chunks missing and the manifest naming them refused, earlier ones intact', async () => {
    const s = await DirChunkStore.open({ name: 'site', path: root, offsite: false });
    const [a, b] = [sealedChunk(keys, 2), sealedChunk(keys, 3)];
    await s.putChunk(a.id, a.blob);
    const m1 = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m1);
    await s.putChunk(b.id, b.blob);
    for (const f of await readdir(join(root, 'tmp'))) await rm(join(root, 'tmp', f)); // lost before its fsync
    await expect(
      s.putManifest(signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [a.id, b.id])),
    ).rejects.toThrow(/ENOENT/);
    expect(await s.missing([a.id, b.id])).toEqual([b.id]);
    await expect(
      s.putManifest(signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [a.id, b.id])),
    ).rejects.toThrow();
    expect((await s.list()).map((x) => x.id)).toEqual([m1.id]);
    await s.putChunk(b.id, b.blob); // the next backup sends it again
    await s.putManifest(signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [a.id, b.id]));
    expect((await s.verify(undefined, (id, blob) => keys.openChunk(id, blob))).problems).toEqual([]);
  });

  it('takes a blob sealed here without its checksum, and checks a copy of it (bytes from elsewhere)', async () => {
    const s = await DirChunkStore.open({ name: 'site', path: root, offsite: false });
    const a = sealedChunk(keys, 4);
    expect(sealedHere(a.blob)).toBe(true);
    const copy = Buffer.from(a.blob);
    expect(sealedHere(copy)).toBe(false);
    copy[copy.length - 1]! ^= 1;
    await expect(s.putChunk(a.id, copy)).rejects.toBeInstanceOf(CorruptDataError);
    expect(await s.putChunk(a.id, a.blob)).toBe(true);
  });
});
