import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { loadSpec } from '../spec/load.js';
import { labPoolDirs, removeLabPoolDirs } from './storage.js';

it('lab down takes the default-place pools of lab machines, never a pool with its own path', () => {
  const spec = loadSpec(`
version: 1
hosts: [{ name: host1 }, { name: san1, role: storage }]
pools:
  - { name: local, type: dir, host: host1 }
  - { name: kept, type: dir, host: host1, path: /srv/kept }
  - { name: nas, type: nfs, host: san1 }
lab:
  name: t
  lan: { cidr: 192.168.70.0/24, gateway: 192.168.70.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.70 }
  hosts: [{ name: host1, address: 192.168.70.11 }]
  storage: [{ name: san1, address: 192.168.70.30 }]
`);
  expect(labPoolDirs(spec)).toEqual(['/var/lib/vmlink/pools/local', '/var/lib/vmlink/pools/nas']);
  expect(labPoolDirs({ ...spec, lab: undefined })).toEqual([]);
});

it('removes pool directories without following a link out of them', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vl-labpools-'));
  try {
    const outside = join(root, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'keep'), 'x');
    const pool = join(root, 'pool');
    mkdirSync(pool);
    writeFileSync(join(pool, 'v.qcow2'), 'x');
    symlinkSync(outside, join(pool, 'link'));
    await removeLabPoolDirs([pool, join(root, 'missing')]);
    expect(existsSync(pool)).toBe(false);
    expect(existsSync(join(outside, 'keep'))).toBe(true);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
