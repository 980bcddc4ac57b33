// DirChunkStore: the ChunkStore conformance suite on a scratch directory, and what is particular to a directory:
// its layout and modes, atomic writes and crash leftovers, a full filesystem, links and oversized files planted in
// the store, GC refusing to sweep past an unreadable manifest, verify moving a damaged chunk aside. A really full
// filesystem (a tmpfs, as root) is test/integration/backup-store.int.test.ts.
import {
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  truncate,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BACKUP_MANIFEST_MAX_BYTES, type ChunkId } from '../../shared/backup.js';
import { BackupKeySet, newBackupKey } from '../../shared/backup-crypto.js';
import { CorruptDataError, InvalidRequestError, StoreFullError } from '../../shared/errors.js';
import { DirChunkStore, type DirChunkStoreOptions } from './chunk-store.js';
import { chunkStoreConformance, sealedChunk, signedManifest } from './conformance-store.js';
import type { ChunkStore } from './types.js';

const chunkFile = (root: string, id: ChunkId) => join(root, 'chunks', id.slice(0, 4), id);

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
  let dir = '';
  let root = '';
  const open = (opts: DirChunkStoreOptions = {}) =>
    DirChunkStore.open({ name: 'site', path: root, offsite: false }, opts);
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-chunkstore-'));
    root = join(dir, 'store');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lays the store out as docs/backup.md says, directories 0700 and files 0600', async () => {
    const s = await open();
    const a = sealedChunk(keys, 1);
    await s.putChunk(a.id, a.blob);
    const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m);
    await s.verify(undefined);
    expect((await readdir(root)).sort()).toEqual(['chunks', 'snapshots', 'store.json', 'tmp', 'verify']);
    expect(JSON.parse(await readFile(join(root, 'store.json'), 'utf8'))).toEqual({
      version: 1,
      keyFingerprint: keys.fingerprint,
    });
    const files = [
      join(root, 'store.json'),
      chunkFile(root, a.id),
      join(root, 'snapshots', 'web1', '20261201T020000Z.json'),
      join(root, 'verify', 'web1', '20261201T020000Z.json'),
    ];
    for (const f of files) expect(((await stat(f)).mode & 0o777).toString(8), f).toBe('600');
    const dirs = [
      root,
      join(root, 'chunks', a.id.slice(0, 4)),
      join(root, 'snapshots', 'web1'),
      join(root, 'tmp'),
    ];
    for (const d of dirs) expect(((await stat(d)).mode & 0o777).toString(8), d).toBe('700');
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('removes a crashed writer’s leftovers from tmp/ when opened, and stale ones at GC; keeps its own live ones', async () => {
    await open();
    const dead = join(root, 'tmp', `${'ab'.repeat(32)}.999999999.0123456789ab`); // pid beyond pid_max: gone
    const live = join(root, 'tmp', `${'cd'.repeat(32)}.${process.pid}.0123456789ab`);
    await writeFile(dead, 'partial');
    await writeFile(live, 'in flight');
    const s = await open();
    expect(await readdir(join(root, 'tmp'))).toEqual([live.split('/').at(-1)]);
    await s.gc(0);
    expect(await readdir(join(root, 'tmp'))).toHaveLength(1); // young and ours: a write in flight
    const old = new Date(Date.now() - 11 * 60 * 1000);
    await utimes(live, old, old);
    await s.gc(0);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('after a crash mid-backup (chunks, no manifest), earlier snapshots are intact and the next backup reuses the chunks', async () => {
    let s = await open();
    const [a, b] = [sealedChunk(keys, 2), sealedChunk(keys, 3)];
    await s.putChunk(a.id, a.blob);
    const m1 = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m1);
    await s.putChunk(b.id, b.blob);
    await writeFile(join(root, 'tmp', `${b.id}.999999999.aaaaaaaaaaaa`), b.blob.subarray(0, 100)); // torn write
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
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
    expect(await s.missing([b.id])).toEqual([b.id]);
    full = false;
    await s.putChunk(b.id, b.blob);
    full = true;
    await expect(
      s.putManifest(signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [a.id, b.id])),
    ).rejects.toBeInstanceOf(StoreFullError);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
    expect((await s.list()).map((x) => x.id)).toEqual([m1.id]);
    expect(await s.getManifest(m1.id)).toEqual(m1);
    full = false; // (verify writes its records)
    expect((await s.verify(undefined, (id, blob) => keys.openChunk(id, blob))).problems).toEqual([]);
  });

  it('refuses a manifest or chunk planted as a link, and a manifest past its size cap', async () => {
    const s = await open();
    const a = sealedChunk(keys, 6);
    await s.putChunk(a.id, a.blob);
    const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m);
    const target = join(dir, 'elsewhere.json');
    await writeFile(target, JSON.stringify(signedManifest(keys, 'web1', '2026-12-01T04:00:00Z', [a.id])));
    await symlink(target, join(root, 'snapshots', 'web1', '20261201T040000Z.json'));
    await expect(s.getManifest('web1@20261201T040000Z')).rejects.toThrow(/link/);
    expect((await s.list()).map((x) => x.id)).toEqual([m.id]); // left out of the list, named by verify
    const v = await s.verify(undefined);
    expect(v.problems.map((p) => p.snapshot)).toEqual(['web1@20261201T040000Z']);
    await expect(s.gc(0)).rejects.toBeInstanceOf(CorruptDataError); // its chunks are unknown: nothing swept
    await rm(join(root, 'snapshots', 'web1', '20261201T040000Z.json'));

    const b = sealedChunk(keys, 7);
    await mkdir(join(root, 'chunks', b.id.slice(0, 4)), { recursive: true });
    await writeFile(join(dir, 'blob'), b.blob);
    await symlink(join(dir, 'blob'), chunkFile(root, b.id));
    await expect(s.getChunk(b.id)).rejects.toThrow(/symbolic link/);

    const big = join(root, 'snapshots', 'web1', '20261201T050000Z.json');
    await writeFile(big, '');
    await truncate(big, BACKUP_MANIFEST_MAX_BYTES + 1);
    await expect(s.getManifest('web1@20261201T050000Z')).rejects.toThrow(/larger than/);
  });

  it('refuses a manifest filed under another snapshot’s name', async () => {
    const s = await open();
    const a = sealedChunk(keys, 8);
    await s.putChunk(a.id, a.blob);
    const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m);
    await writeFile(join(root, 'snapshots', 'web1', '20261201T060000Z.json'), JSON.stringify(m));
    await expect(s.getManifest('web1@20261201T060000Z')).rejects.toThrow(/says it is web1@20261201T020000Z/);
  });

  it('verify moves a chunk whose checksum fails aside, so the next backup sends it again', async () => {
    const s = await open();
    const a = sealedChunk(keys, 9);
    await s.putChunk(a.id, a.blob);
    const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m);
    const p = chunkFile(root, a.id);
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
