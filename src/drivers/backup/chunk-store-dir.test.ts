// The directory chunk store's files (chunk-store-dir.ts), seen through DirChunkStore: the layout and modes of
// docs/backup.md, crashed writers' leftovers in tmp/, links and oversized files planted in the store, a manifest filed
// under another snapshot's name.
import { mkdir, readdir, readFile, rm, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BACKUP_MANIFEST_MAX_BYTES } from '../../shared/backup.js';
import { BackupKeySet, newBackupKey } from '../../shared/backup-crypto.js';
import { CorruptDataError } from '../../shared/errors.js';
import { chunkFile, scratchStores } from './chunk-store.test-util.js';
import { sealedChunk, signedManifest } from './conformance-store.js';

describe('the files of a directory chunk store', () => {
  const keys = BackupKeySet.fromKey(newBackupKey(), 'key-a');
  const t = scratchStores();
  const open = t.open;

  it('lays the store out as docs/backup.md says, directories 0700 and files 0600', async () => {
    const s = await open();
    const a = sealedChunk(keys, 1);
    await s.putChunk(a.id, a.blob);
    const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m);
    await s.verify(undefined);
    expect((await readdir(t.root)).sort()).toEqual(['chunks', 'snapshots', 'store.json', 'tmp', 'verify']);
    expect(JSON.parse(await readFile(join(t.root, 'store.json'), 'utf8'))).toEqual({
      version: 1,
      keyFingerprint: keys.fingerprint,
    });
    const files = [
      join(t.root, 'store.json'),
      chunkFile(t.root, a.id),
      join(t.root, 'snapshots', 'web1', '20261201T020000Z.json'),
      join(t.root, 'verify', 'web1', '20261201T020000Z.json'),
    ];
    for (const f of files) expect(((await stat(f)).mode & 0o777).toString(8), f).toBe('600');
    const dirs = [
      t.root,
      join(t.root, 'chunks', a.id.slice(0, 4)),
      join(t.root, 'snapshots', 'web1'),
      join(t.root, 'tmp'),
    ];
    for (const d of dirs) expect(((await stat(d)).mode & 0o777).toString(8), d).toBe('700');
    expect(await readdir(join(t.root, 'tmp'))).toEqual([]);
  });

  it('removes a crashed writer’s leftovers from tmp/ when opened, and stale ones at GC; keeps its own live ones', async () => {
    await open();
    const dead = join(t.root, 'tmp', `${'ab'.repeat(32)}.999999999.0123456789ab`); // pid beyond pid_max: gone
    const live = join(t.root, 'tmp', `${'cd'.repeat(32)}.${process.pid}.0123456789ab`);
    await writeFile(dead, 'partial');
    await writeFile(live, 'in flight');
    const s = await open();
    expect(await readdir(join(t.root, 'tmp'))).toEqual([live.split('/').at(-1)]);
    await s.gc(0);
    expect(await readdir(join(t.root, 'tmp'))).toHaveLength(1); // young and ours: a write in flight
    const old = new Date(Date.now() - 11 * 60 * 1000);
    await utimes(live, old, old);
    await s.gc(0);
    expect(await readdir(join(t.root, 'tmp'))).toEqual([]);
  });

  it('refuses a manifest or chunk planted as a link, and a manifest past its size cap', async () => {
    const s = await open();
    const a = sealedChunk(keys, 6);
    await s.putChunk(a.id, a.blob);
    const m = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
    await s.putManifest(m);
    const target = join(t.dir, 'elsewhere.json');
    await writeFile(target, JSON.stringify(signedManifest(keys, 'web1', '2026-12-01T04:00:00Z', [a.id])));
    await symlink(target, join(t.root, 'snapshots', 'web1', '20261201T040000Z.json'));
    await expect(s.getManifest('web1@20261201T040000Z')).rejects.toThrow(/link/);
    expect((await s.list()).map((x) => x.id)).toEqual([m.id]); // left out of the list, named by verify
    const v = await s.verify(undefined);
    expect(v.problems.map((p) => p.snapshot)).toEqual(['web1@20261201T040000Z']);
    await expect(s.gc(0)).rejects.toBeInstanceOf(CorruptDataError); // its chunks are unknown: nothing swept
    await rm(join(t.root, 'snapshots', 'web1', '20261201T040000Z.json'));

    const b = sealedChunk(keys, 7);
    await mkdir(join(t.root, 'chunks', b.id.slice(0, 4)), { recursive: true });
    await writeFile(join(t.dir, 'blob'), b.blob);
    await symlink(join(t.dir, 'blob'), chunkFile(t.root, b.id));
    await expect(s.getChunk(b.id)).rejects.toThrow(/symbolic link/);

    const big = join(t.root, 'snapshots', 'web1', '20261201T050000Z.json');
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
    await writeFile(join(t.root, 'snapshots', 'web1', '20261201T060000Z.json'), JSON.stringify(m));
    await expect(s.getManifest('web1@20261201T060000Z')).rejects.toThrow(/says it is web1@20261201T020000Z/);
  });
});
