import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../exec/runner.js';
import { natNet } from './linux/fixtures.test-util.js';
import { networkDrivers } from './registry.js';
import { LEGACY_NETWORKS_DIR, moveLegacyNetworkDirs } from './state-layout.js';

let stateDir: string;
beforeEach(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'vmlink-layout-'));
});
afterEach(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

/** Writes a legacy `networks/<name>/` directory with the given files. */
async function legacy(name: string, files: Record<string, string>): Promise<void> {
  const dir = join(stateDir, LEGACY_NETWORKS_DIR, name);
  await mkdir(dir, { recursive: true });
  for (const [f, body] of Object.entries(files)) await writeFile(join(dir, f), body);
}

/** Every file under stateDir with its content, as `path: content` (the whole tree, to prove nothing is lost). */
async function tree(dir = stateDir, prefix = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) Object.assign(out, await tree(join(dir, e.name), rel));
    else out[rel] = await readFile(join(dir, e.name), 'utf8');
  }
  return out;
}

const linuxState = (name: string) =>
  JSON.stringify({ version: 1, config: { ...natNet, name }, configHash: 'h1' });
const ovsState = (name: string) =>
  JSON.stringify({
    version: 1,
    driver: 'ovs',
    config: { ...natNet, name, backend: 'ovs' },
    configHash: 'h2',
  });

describe('moveLegacyNetworkDirs', () => {
  const linuxMove = () =>
    moveLegacyNetworkDirs({ stateDir, target: join(stateDir, 'network-linux'), marker: 'network.json' });
  const ovsMove = () =>
    moveLegacyNetworkDirs({ stateDir, target: join(stateDir, 'network-ovs'), marker: 'ovs.json' });

  it('moves each backend its own directories with every file in them, once, and drops the emptied legacy dir', async () => {
    await legacy('web', { 'network.json': linuxState('web'), 'dnsmasq.leases': 'lease 1\n' });
    await legacy('trunk', { 'ovs.json': ovsState('trunk'), 'dnsmasq.conf': 'conf\n' });
    const before = await tree();

    expect(await linuxMove()).toEqual(['web']);
    expect(await ovsMove()).toEqual(['trunk']);
    const after = await tree();
    // Same files, same contents, only the directory changed: nothing lost, nothing duplicated.
    expect(after).toEqual(
      Object.fromEntries(
        Object.entries(before).map(([p, c]) => [
          p.replace('networks/web/', 'network-linux/web/').replace('networks/trunk/', 'network-ovs/trunk/'),
          c,
        ]),
      ),
    );
    expect(await readdir(stateDir)).toEqual(['network-linux', 'network-ovs'].sort());

    // A second start finds nothing to move and changes nothing.
    expect(await linuxMove()).toEqual([]);
    expect(await ovsMove()).toEqual([]);
    expect(await tree()).toEqual(after);
  });

  it('finishes an interrupted move: what moved stays, what did not moves now', async () => {
    await legacy('a', { 'network.json': linuxState('a') });
    await legacy('b', { 'network.json': linuxState('b') });
    // As if the agent died after moving `a` only.
    await mkdir(join(stateDir, 'network-linux'));
    await import('node:fs/promises').then((fs) =>
      fs.rename(join(stateDir, 'networks', 'a'), join(stateDir, 'network-linux', 'a')),
    );
    expect(await linuxMove()).toEqual(['b']);
    expect(Object.keys(await tree()).sort()).toEqual([
      'network-linux/a/network.json',
      'network-linux/b/network.json',
    ]);
  });

  it('leaves what is not its own, and a legacy directory whose name is taken in the new place', async () => {
    await legacy('trunk', { 'ovs.json': ovsState('trunk') });
    await legacy('junk', { 'dnsmasq.log': 'x' }); // no state file: nobody's
    await legacy('web', { 'network.json': linuxState('web') });
    await mkdir(join(stateDir, 'network-linux', 'web'), { recursive: true });
    await writeFile(join(stateDir, 'network-linux', 'web', 'network.json'), 'newer');
    expect(await linuxMove()).toEqual([]);
    const t = await tree();
    expect(t['network-linux/web/network.json']).toBe('newer');
    expect(t['networks/web/network.json']).toBe(linuxState('web'));
    expect(t['networks/trunk/ovs.json']).toBe(ovsState('trunk'));
    expect(t['networks/junk/dnsmasq.log']).toBe('x');
  });

  it('stops what runs from a directory before it moves and starts it from the new place after', async () => {
    await legacy('web', { 'network.json': linuxState('web') });
    const calls: string[] = [];
    await moveLegacyNetworkDirs({
      stateDir,
      target: join(stateDir, 'network-linux'),
      marker: 'network.json',
      beforeMove: async (name, dir) => {
        calls.push(`stop ${name} ${dir.slice(stateDir.length)}`);
      },
      afterMove: async (name, dir) => {
        calls.push(`start ${name} ${dir.slice(stateDir.length)}`);
      },
    });
    expect(calls).toEqual(['stop web /networks/web', 'start web /network-linux/web']);
  });
});

describe('network drivers upgradeState', () => {
  it('after the upgrade each backend answers for its networks from its own directory', async () => {
    // Without a subnet there is no dnsmasq to restart (that path is covered by the network integration tests).
    const noDhcp = (state: string) =>
      JSON.stringify({ ...JSON.parse(state), config: { ...JSON.parse(state).config, subnet: undefined } });
    await legacy('web', { 'network.json': noDhcp(linuxState('web')) });
    await legacy('trunk', { 'ovs.json': noDhcp(ovsState('trunk')) });
    const opts = { runner: new RecordingRunner(), stateDir };
    const linux = networkDrivers.linux(opts);
    const ovs = networkDrivers.ovs(opts);
    await linux.upgradeState();
    await ovs.upgradeState();
    expect((await linux.appliedConfig('web'))?.configHash).toBe('h1');
    expect((await ovs.appliedConfig('trunk'))?.configHash).toBe('h2');
    expect(await linux.appliedConfig('trunk')).toBeUndefined();
    expect(await readdir(stateDir)).not.toContain(LEGACY_NETWORKS_DIR);
  });
});
