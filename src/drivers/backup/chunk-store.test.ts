// DirChunkStore: the ChunkStore conformance suite on a scratch directory, and what is particular to a directory:
// a crash mid-backup, a full filesystem, configs and names refused. Its files (layout, modes, leftovers, planted
// links): chunk-store-dir.test.ts; GC and verify: chunk-store-upkeep.test.ts. A really full filesystem (a tmpfs, as
// root) is test/integration/backup-store.int.test.ts.
import { mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BackupKeySet, newBackupKey } from '../../shared/backup-crypto.js';
import { InvalidRequestError, StoreFullError } from '../../shared/errors.js';
import { DirChunkStore } from './chunk-store.js';
import { chunkFile, scratchStores } from './chunk-store.test-util.js';
import { chunkStoreConformance, sealedChunk, signedManifest } from './conformance-store.js';
import type { ChunkStore } from './types.js';

chunkStoreConformance('dir', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-chunkstore-'));
  const root = (s: ChunkStore) => s.config.path;
  return {
    make: () => DirChunkStore.open({ name: 'site', path: join(dir, 'store'), offsite: false }),
    corruptChunk: async (s, id) => {
      await (s as DirChunkStore).flush();
      const p = chunkFile(root(s), id);
      const b = await readFile(p);
      b[b.length >> 1]! ^= 0x40;
      await writeFile(p, b);
    },
    ageChunk: async (s, id, ms) => {
      const t = new Date(Date.now() - ms);
      await (s as DirChunkStore).flush(); // written chunks take their names in batches
      await utimes(chunkFile(root(s), id), t, t);
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

describe('DirChunkStore', () => {
  const keys = BackupKeySet.fromKey(newBackupKey(), 'key-a');
  const t = scratchStores();
  const open = t.open;

  it('after a crash mid-backup (chunks, no manifest), earlier snapshots are intact and the next backup reuses the chunks', async () => {
    let s = await open();
    const [a, b] = [sealedChunk(keys, 2), sealedChunk(keys, 3)];
    await s.putChunk(a.id, a.blob);
    const m1 = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m1);
    await s.putChunk(b.id, b.blob);
    await writeFile(join(t.root, 'tmp', `${b.id}.999999999.aaaaaaaaaaaa`), b.blob.subarray(0, 100)); // torn write
    s = await open(); // the agent restarts
    expect(await s.list()).toHaveLength(1);
    expect((await s.verify(undefined)).problems).toEqual([]);
    expect(await s.missing([a.id, b.id])).toEqual([]);
    await s.putManifest(signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [a.id, b.id]));
    expect((await s.list()).map((x) => x.id)).toEqual([m1.id, 'web1@20261201T030000Z']);
  });

  it('a full filesystem fails the write with StoreFullError, leaves no temporary file and earlier snapshots intact', async () => {
    let full = false;
    const s = await open({
      write: async (fh, data) => {
        if (full) {
          await fh.write(data.subarray(0, data.length >> 1)); // part of it made it, then the disk filled
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        }
        await fh.writeFile(data);
      },
    });
    const [a, b] = [sealedChunk(keys, 4), sealedChunk(keys, 5)];
    await s.putChunk(a.id, a.blob);
    const m1 = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m1);
    full = true;
    const err = await s.putChunk(b.id, b.blob).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreFullError);
    expect((err as Error).message).toMatch(/backup store site: its filesystem is full writing chunk/);
    expect(await readdir(join(t.root, 'tmp'))).toEqual([]);
    expect(await s.missing([b.id])).toEqual([b.id]);
    full = false;
    await s.putChunk(b.id, b.blob);
    full = true;
    await expect(
      s.putManifest(signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [a.id, b.id])),
    ).rejects.toBeInstanceOf(StoreFullError);
    expect(await readdir(join(t.root, 'tmp'))).toEqual([]);
    expect((await s.list()).map((x) => x.id)).toEqual([m1.id]);
    expect(await s.getManifest(m1.id)).toEqual(m1);
    full = false; // (verify writes its records)
    expect((await s.verify(undefined, (id, blob) => keys.openChunk(id, blob))).problems).toEqual([]);
  });

  it('refuses a config whose path would leave its directory, or is relative', async () => {
    await expect(
      DirChunkStore.open({ name: 'site', path: '/tmp/../etc', offsite: false }),
    ).rejects.toBeInstanceOf(InvalidRequestError);
    await expect(
      DirChunkStore.open({ name: 'site', path: 'rel/dir', offsite: false }),
    ).rejects.toBeInstanceOf(InvalidRequestError);
  });

  it('refuses a VM name with traversal in list()', async () => {
    const s = await open();
    await expect(s.list('../etc')).rejects.toBeInstanceOf(InvalidRequestError);
  });
});
