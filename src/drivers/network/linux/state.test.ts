import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bridgedNet, isolatedNet, natNet } from './fixtures.test-util.js';
import { LinuxNetworkStateStore } from './state.js';

let stateDir: string;
beforeEach(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'vmlink-linux-state-'));
});
afterEach(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

describe('LinuxNetworkStateStore', () => {
  it('writes network.json under network-linux/<name>/ and reads every network back, sorted by name', async () => {
    const s = new LinuxNetworkStateStore(stateDir);
    for (const config of [natNet, isolatedNet, bridgedNet])
      await s.write({ version: 1, config, configHash: config.name });
    expect(await readdir(join(stateDir, 'network-linux', natNet.name))).toEqual(['network.json']);
    expect((await s.readAll()).map((x) => x.config.name)).toEqual(
      [natNet.name, isolatedNet.name, bridgedNet.name].sort(),
    );
    expect(await s.read(natNet.name)).toEqual({ version: 1, config: natNet, configHash: natNet.name });
  });

  it('ignores what is not its own: other versions, another name, another backend file, odd directory names', async () => {
    const s = new LinuxNetworkStateStore(stateDir);
    const put = async (dir: string, file: string, body: unknown) => {
      await mkdir(join(stateDir, 'network-linux', dir), { recursive: true });
      await writeFile(join(stateDir, 'network-linux', dir, file), JSON.stringify(body));
    };
    await put('v2', 'network.json', { version: 2, config: { ...natNet, name: 'v2' }, configHash: '' });
    await put('moved', 'network.json', { version: 1, config: natNet, configHash: '' });
    await put('ovsnet', 'ovs.json', { version: 1, driver: 'ovs', config: { ...natNet, name: 'ovsnet' } });
    await put('.hidden', 'network.json', {
      version: 1,
      config: { ...natNet, name: '.hidden' },
      configHash: '',
    });
    expect(await s.readAll()).toEqual([]);
    expect(await s.read('nothing-here')).toBeUndefined();
  });

  it('answers empty before anything was written, and remove of a missing network is fine', async () => {
    const s = new LinuxNetworkStateStore(join(stateDir, 'not-yet'));
    expect(await s.readAll()).toEqual([]);
    expect(await s.readUplink()).toBeUndefined();
    await s.remove('web');
  });

  it('keeps the uplink config in uplink.json and leaves no temporary file', async () => {
    const s = new LinuxNetworkStateStore(stateDir);
    const config = { device: 'eth0', mtu: 9000 };
    await s.writeUplink({ version: 1, config, configHash: 'h1' });
    expect(await s.readUplink()).toEqual({ version: 1, config, configHash: 'h1' });
    expect(await readdir(stateDir)).toEqual(['uplink.json']);
    expect(JSON.parse(await readFile(join(stateDir, 'uplink.json'), 'utf8')).configHash).toBe('h1');
  });
});
