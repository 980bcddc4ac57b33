import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SecurityGroupConfig } from '../../shared/security-groups.js';
import { SecurityGroupStore } from './security-group-store.js';

const SUBDIR = 'groups-test';

const web: SecurityGroupConfig = {
  name: 'web',
  rules: [{ direction: 'ingress', protocol: 'tcp', ports: [{ from: 80, to: 80 }] }],
  memberMacs: ['52:54:00:00:00:01'],
};

describe('security group state', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-sgstate-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('persists what was applied, lists it by name, forgets it', async () => {
    const store = new SecurityGroupStore(dir, SUBDIR);
    expect(await store.readAll()).toEqual([]);
    await store.write({ config: { ...web, name: 'zz' }, configHash: 'h2' });
    await store.write({ config: web, configHash: 'h1' });
    expect(await new SecurityGroupStore(dir, SUBDIR).readAll()).toEqual([
      { config: web, configHash: 'h1' },
      { config: { ...web, name: 'zz' }, configHash: 'h2' },
    ]);
    expect([...(await store.byName()).keys()]).toEqual(['web', 'zz']);
    await store.remove('web');
    await store.remove('web');
    expect((await store.readAll()).map((g) => g.config.name)).toEqual(['zz']);
  });

  it('reads a file of another version, or naming another group, as absent; refuses a link', async () => {
    const store = new SecurityGroupStore(dir, SUBDIR);
    await store.write({ config: web, configHash: 'h1' });
    const file = join(dir, SUBDIR, 'web.json');
    const body = JSON.parse(await readFile(file, 'utf8'));
    await writeFile(join(dir, SUBDIR, 'other.json'), JSON.stringify(body));
    await writeFile(file, JSON.stringify({ ...body, version: 2 }));
    expect(await store.readAll()).toEqual([]);
    expect(await store.read('../web')).toBeUndefined();
    await rm(file);
    await symlink('/etc/passwd', file);
    await expect(store.read('web')).rejects.toThrow(/symbolic link/);
  });
});
