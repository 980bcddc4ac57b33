// The batch path's promise in commands: many new networks (or ports) cost a fixed handful of commands, not a
// handful per object. Correctness against a real kernel is in the conformance suite (bulk case).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../../exec/runner.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { LinuxNetworkDriver } from './driver.js';
import { eth0 } from './fixtures.test-util.js';

const underlayAddr = JSON.stringify([
  { ifname: 'eth0', addr_info: [{ family: 'inet', local: '192.168.77.1', prefixlen: 24, scope: 'global' }] },
]);

const overlay = (i: number): NetworkConfig => ({
  name: `ov${i}`,
  mode: 'vxlan',
  backend: 'linux',
  bridge: `vlb-0000${String(i).padStart(4, '0')}`,
  mtu: 1450,
  vxlan: {
    vni: 2000 + i,
    device: `vlx-0000${String(i).padStart(4, '0')}`,
    local: '192.168.77.1',
    remotes: ['192.168.77.2', '192.168.77.3'],
    port: 4789,
    underlay: 'eth0',
  },
  forwards: [],
});

let stateDir: string;
beforeEach(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'vmlink-batch-unit-'));
});
afterEach(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

/** Commands the driver ran outside its one-time capability probe (which runs in a `vlcap-` namespace). */
const changes = (r: RecordingRunner) =>
  r.calls.filter((c) => !c.netns?.startsWith('vlcap-') && !c.argv.some((a) => a.startsWith('vlcap-')));

describe('linux driver: networks in bulk', () => {
  it('creates 20 overlays with one ip batch, one bridge batch and one sysctl', async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show'], { stdout: JSON.stringify([eth0]) })
      .on(['ip', '-json', 'addr', 'show'], { stdout: underlayAddr });
    const d = new LinuxNetworkDriver({ runner, stateDir, netns: 'h1' });
    await d.capabilities();
    runner.calls.length = 0;
    const nets = Array.from({ length: 20 }, (_, i) => overlay(i));
    const r = await d.ensureNetworks(nets.map((cfg) => ({ cfg, configHash: `h${cfg.name}` })));
    expect(r).toEqual(nets.map(() => ({ ok: true })));
    const argv = changes(runner).map((c) => c.argv.slice(0, 3).join(' '));
    // Observation (links, addresses), the devices, the flood entries, arp_ignore, and the (absent) table.
    expect(argv).toEqual([
      'ip -json -details',
      'ip -json addr',
      'ip -batch -',
      'bridge -batch -',
      'sysctl -q -w',
      'nft -f -',
    ]);
    const batch = changes(runner)
      .find((c) => c.argv[1] === '-batch')!
      .input!.trim()
      .split('\n');
    // Per overlay: bridge add + set, vxlan add + set.
    expect(batch).toHaveLength(80);
    const fdb = changes(runner)
      .find((c) => c.argv[0] === 'bridge')!
      .input!.trim()
      .split('\n');
    expect(fdb).toHaveLength(40);
    expect(await d.appliedConfig('ov7')).toEqual({ config: nets[7], configHash: 'hov7' });
  });

  it('goes one by one after a failed batch, taking the batch back first', async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show'], { stdout: JSON.stringify([eth0]) })
      .on(['ip', '-json', 'addr', 'show'], { stdout: underlayAddr })
      .on(['bridge', '-batch'], { code: 2, stderr: 'RTNETLINK answers: Operation not supported' });
    const d = new LinuxNetworkDriver({ runner, stateDir, netns: 'h1' });
    const nets = [overlay(1), overlay(2)];
    const r = await d.ensureNetworks(nets.map((cfg) => ({ cfg, configHash: 'h' })));
    // The first network's own FDB sync fails again: it is the one named, the second is never tried.
    expect(r).toHaveLength(1);
    expect(r[0]!.ok).toBe(false);
    expect(String((r[0] as { error: Error }).error.message)).toMatch(/Operation not supported/);
    const lines = runner.lines();
    // The batch's devices were deleted before the one-by-one attempt.
    expect(lines.some((l) => l.includes('link del dev vlx-00000002'))).toBe(true);
    expect(await d.appliedConfig('ov1')).toBeUndefined();
    expect(await d.appliedConfig('ov2')).toBeUndefined();
  });

  it('deletes taps together through a device group no other device is in, refusing a non-tap first', async () => {
    const tap = (name: string, group: number | string) => ({
      ifindex: 10,
      ifname: name,
      flags: [],
      mtu: 1500,
      operstate: 'DOWN',
      group,
      linkinfo: { info_kind: 'tun', info_data: { type: 'tap' } },
    });
    const runner = new RecordingRunner().on(['ip', '-json', '-details', 'link', 'show'], {
      stdout: JSON.stringify([{ ...eth0, group: 'default' }, tap('vlt-a-0', 7), tap('vlt-b-0', 'default')]),
    });
    const d = new LinuxNetworkDriver({ runner, stateDir, netns: 'h1' });
    await d.deletePorts(['vlt-a-0', 'vlt-b-0', 'vlt-gone-0']);
    const lines = runner.calls
      .find((c) => c.argv[1] === '-batch')!
      .input!.trim()
      .split('\n');
    const group = /group (\d+)$/.exec(lines[0]!)![1];
    expect(Number(group)).not.toBe(7);
    expect(lines).toEqual([
      `link set dev vlt-a-0 group ${group}`,
      `link set dev vlt-b-0 group ${group}`,
      `link del group ${group}`,
    ]);
    await expect(d.deletePorts(['eth0'])).rejects.toThrow(/eth0 is not a tap/);
  });
});
