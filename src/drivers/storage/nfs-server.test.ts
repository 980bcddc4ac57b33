import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../exec/runner.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { NFS_FILE_OWNER_DEFAULT } from './ganesha-config.js';
import { NfsServer } from './nfs-server.js';

describe('NfsServer exports while stopped', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-nfs-server-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('records exports in its state file and renders them into ganesha.conf, mode 0600, running nothing', async () => {
    const runner = new RecordingRunner();
    const s = new NfsServer({ runner, dir: join(dir, 'inst'), owner: { uid: 1234, gid: 1235 } });
    await s.putExport({ exportId: 7, path: '/srv/p7', pseudoPath: '/vmlink/p7' });
    await s.putExport({ exportId: 3, path: '/srv/p3', pseudoPath: '/vmlink/p3', clients: ['10.1.0.0/16'] });
    await s.putExport({ exportId: 7, path: '/srv/p7b', pseudoPath: '/vmlink/p7' });
    expect((await s.exports()).map((e) => [e.exportId, e.path])).toEqual([
      [3, '/srv/p3'],
      [7, '/srv/p7b'],
    ]);
    const conf = await readFile(s.paths.conf, 'utf8');
    expect(conf).toContain('Path = "/srv/p7b";');
    expect(conf).toContain('Anonymous_Uid = 1234;');
    expect(conf).toContain('Clients = 10.1.0.0/16;');
    expect((await stat(s.paths.conf)).mode & 0o777).toBe(0o600);
    expect((await stat(s.paths.dir)).mode & 0o777).toBe(0o700);
    // A pool whose export id changed replaces its export (same pseudo path), not adds a second one.
    await s.putExport({ exportId: 9, path: '/srv/p7b', pseudoPath: '/vmlink/p7' });
    expect((await s.exports()).map((e) => e.exportId)).toEqual([3, 9]);
    await s.putExport({ exportId: 7, path: '/srv/p7b', pseudoPath: '/vmlink/p7' });
    await s.removeExport(7);
    await s.removeExport(99);
    expect((await s.exports()).map((e) => e.exportId)).toEqual([3]);
    expect(await readFile(s.paths.conf, 'utf8')).not.toContain('/srv/p7b');
    expect(runner.calls).toEqual([]);
    // Opened again without an owner, the recorded one holds.
    expect(await new NfsServer({ runner, dir: s.paths.dir }).owner()).toEqual({ uid: 1234, gid: 1235 });
    expect(new NfsServer({ runner, dir: s.paths.dir }).ownerSync()).toEqual({ uid: 1234, gid: 1235 });
  });

  it('refuses an export ganesha could not be given, writing nothing', async () => {
    const s = new NfsServer({ runner: new RecordingRunner(), dir });
    await expect(s.putExport({ exportId: 1, path: '/srv/"x', pseudoPath: '/vmlink/x' })).rejects.toThrow(
      InvalidRequestError,
    );
    expect(await s.exports()).toEqual([]);
    expect(await s.owner()).toEqual(NFS_FILE_OWNER_DEFAULT);
  });

  it('refuses a state file that is not what it wrote', async () => {
    const s = new NfsServer({ runner: new RecordingRunner(), dir });
    await writeFile(s.paths.state, JSON.stringify({ owner: { uid: 0, gid: 0 }, exports: [] }));
    await expect(s.exports()).rejects.toThrow(/unexpected content/);
  });

  it('has no processes when none were recorded, so it is not ready', async () => {
    const s = new NfsServer({ runner: new RecordingRunner(), dir });
    expect(await s.processes()).toEqual({});
    expect(await s.ready()).toBe(false);
  });
});
