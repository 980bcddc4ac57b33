// NfsPool without a running server: what it refuses, reports and records. The server side and QEMU's client run for
// real in test/integration/storage-nfs.int.test.ts (with the pool conformance suite).
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner, SystemRunner } from '../../exec/runner.js';
import { InvalidRequestError, UnsupportedError } from '../../shared/errors.js';
import { nfsExportId, nfsPseudoPath, POOL_FEATURES, type PoolConfig } from '../../shared/storage.js';
import { NfsPool } from './nfs.js';
import { NfsServer } from './nfs-server.js';
import { PoolStateStore } from './pool-state.js';

describe('NfsPool', () => {
  let root = '';
  let pool: PoolConfig;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vmlink-nfspool-'));
    pool = {
      name: 'nas',
      type: 'nfs',
      path: join(root, 'pools', 'nas'),
      nfs: { exportId: nfsExportId('nas'), pseudoPath: nfsPseudoPath('nas') },
    };
    // A pool as an earlier ensurePool left it: its directory and its record.
    await mkdir(pool.path, { recursive: true, mode: 0o711 });
    await new PoolStateStore(join(root, 'state')).write({ config: pool, configHash: 'h1' });
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('declares the nfs features and refuses pools of another type', async () => {
    const b = new NfsPool({ runner: new SystemRunner(), stateDir: join(root, 'state') });
    expect(b.type).toBe('nfs');
    expect(b.features).toEqual(POOL_FEATURES.nfs);
    await expect(b.ensurePool({ ...pool, type: 'dir' }, 'h1')).rejects.toThrow(InvalidRequestError);
  });

  it('without an NFS server refuses every change and reports why', async () => {
    const b = new NfsPool({ runner: new SystemRunner(), stateDir: join(root, 'state') });
    await expect(b.ensurePool(pool, 'h1')).rejects.toThrow(UnsupportedError);
    await expect(
      b.createVolume(pool, { pool: 'nas', name: 'v', sizeMiB: 1, format: 'qcow2' }),
    ).rejects.toThrow(/--nfs-dir/);
    const [seen] = await b.listPools();
    expect(seen?.problems).toEqual(['this agent serves no NFS (no --nfs-dir)']);
  });

  it('gives volume files to the uid clients are squashed to, 0600; reports a missing export and a stopped server', async () => {
    const server = new NfsServer({
      runner: new RecordingRunner(),
      dir: join(root, 'nfs'),
      owner: { uid: 4321, gid: 4322 },
    });
    const b = new NfsPool({ runner: new SystemRunner(), stateDir: join(root, 'state'), ganesha: server });
    await b.createVolume(pool, { pool: 'nas', name: 'v1', sizeMiB: 1, format: 'qcow2' });
    const st = await stat(join(pool.path, 'v1.qcow2'));
    expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o777 }).toEqual({
      uid: 4321,
      gid: 4322,
      mode: 0o600,
    });
    const [seen] = await b.listPools();
    expect(seen?.problems).toEqual([
      `export /vmlink/nas is missing from nfs-ganesha's exports`,
      `nfs-ganesha (${server.paths.dir}) is not running or does not answer`,
    ]);
    expect(seen?.volumes.map((v) => v.name)).toEqual(['v1']);
    await b.deleteVolume(pool, 'v1');
  });

  it('deletePool takes its export away', async () => {
    const server = new NfsServer({ runner: new RecordingRunner(), dir: join(root, 'nfs2') });
    await server.putExport({
      exportId: pool.nfs!.exportId,
      path: pool.path,
      pseudoPath: pool.nfs!.pseudoPath,
    });
    await server.putExport({ exportId: 7, path: '/srv/other', pseudoPath: '/vmlink/other' });
    const b = new NfsPool({ runner: new SystemRunner(), stateDir: join(root, 'state'), ganesha: server });
    await b.deletePool(pool);
    expect((await server.exports()).map((e) => e.pseudoPath)).toEqual(['/vmlink/other']);
    expect(await b.listPools()).toEqual([]);
  });
});
