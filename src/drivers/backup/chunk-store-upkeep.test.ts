// The upkeep of a directory chunk store (chunk-store-upkeep.ts): verify moving a damaged chunk aside and GC sweeping
// it. GC refusing to sweep past an unreadable manifest: chunk-store-dir.test.ts; the rest of GC and verify: the
// conformance suite (conformance-store.ts, run by chunk-store.test.ts).
import { readFile, writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { BackupKeySet, newBackupKey } from '../../shared/backup-crypto.js';
import { chunkFile, scratchStores } from './chunk-store.test-util.js';
import { sealedChunk, signedManifest } from './conformance-store.js';

describe('the upkeep of a directory chunk store', () => {
  const keys = BackupKeySet.fromKey(newBackupKey(), 'key-a');
  const t = scratchStores();
  const open = t.open;

  it('verify moves a chunk whose checksum fails aside, so the next backup sends it again', async () => {
    const s = await open();
    const a = sealedChunk(keys, 9);
    await s.putChunk(a.id, a.blob);
    const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m);
    const p = chunkFile(t.root, a.id);
    const bytes = await readFile(p);
    bytes[100]! ^= 1;
    await writeFile(p, bytes);
    const v = await s.verify(undefined);
    expect(v.problems).toEqual([
      expect.objectContaining({ snapshot: m.id, chunk: a.id, problem: expect.stringMatching(/checksum/) }),
    ]);
    expect(await s.missing([a.id])).toEqual([a.id]);
    expect((await s.verify(undefined)).problems[0]!.problem).toMatch(/missing/);
    await s.putChunk(a.id, a.blob); // the next backup re-sends it
    expect((await s.verify(undefined)).problems).toEqual([]);
    expect((await s.list())[0]!.verify).toMatchObject({ ok: true });
    const r = await s.gc(0); // the .bad copy is garbage
    expect(r.chunksRemoved).toBe(1);
  });
});
