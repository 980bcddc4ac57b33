import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StateFileError } from '../../shared/state-file.js';
import type { PoolConfig } from '../../shared/storage.js';
import { PoolStateStore } from './pool-state.js';

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-pool-state-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const dirPool: PoolConfig = { name: 'local', type: 'dir', path: '/var/lib/vmlink/pools/local' };
const nfsPool: PoolConfig = {
  name: 'nas',
  type: 'nfs',
  path: '/srv/nas',
  nfs: { exportId: 7, pseudoPath: '/vmlink/nas' },
};

describe('PoolStateStore', () => {
  it('keeps each pool realised, by name and by type, and forgets it', async () => {
    const s = new PoolStateStore(join(dir, 'a'));
    expect(await s.readAll()).toEqual([]);
    await s.write({ config: nfsPool, configHash: 'h2' });
    await s.write({ config: dirPool, configHash: 'h1' });
    expect(await s.read('local')).toEqual({ config: dirPool, configHash: 'h1' });
    expect((await s.readAll()).map((r) => r.config.name)).toEqual(['local', 'nas']);
    expect(await s.readAll('nfs')).toEqual([{ config: nfsPool, configHash: 'h2' }]);
    await s.write({ config: dirPool, configHash: 'h3' });
    expect((await new PoolStateStore(join(dir, 'a')).read('local'))?.configHash).toBe('h3');
    await s.remove('local');
    await s.remove('local');
    expect(await s.read('local')).toBeUndefined();
    expect(await s.read('../a/pools/nas')).toBeUndefined();
    await expect(s.write({ config: { ...dirPool, name: '../x' }, configHash: 'h' })).rejects.toThrow(
      /must match/,
    );
  });

  it('reads a record of another name or version as absent; refuses a link or a record pointing elsewhere', async () => {
    const s = new PoolStateStore(join(dir, 'b'));
    await mkdir(s.dir, { recursive: true });
    await writeFile(join(s.dir, 'x.json'), JSON.stringify({ version: 1, configHash: 'h', config: dirPool }));
    await writeFile(
      join(s.dir, 'old.json'),
      JSON.stringify({ version: 2, configHash: 'h', config: dirPool }),
    );
    expect(await s.read('x')).toBeUndefined();
    expect(await s.read('old')).toBeUndefined();
    await writeFile(
      join(s.dir, 'bad.json'),
      JSON.stringify({ version: 1, configHash: 'h', config: { ...dirPool, name: 'bad', path: '/a/../etc' } }),
    );
    await expect(s.read('bad')).rejects.toThrow(StateFileError);
    await symlink('/etc/passwd', join(s.dir, 'linked.json'));
    await expect(s.read('linked')).rejects.toThrow(/symbolic link/);
  });
});
