// Conformance suite every network backend must pass, run against a real network namespace the
// suite creates (and deletes) per test file. Call it from an integration test:
//   networkConformance('linux', (env) => new LinuxNetworkDriver(env));
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ip } from '../../exec/ip.js';
import { type Runner, SystemRunner } from '../../exec/runner.js';
import type { NetworkConfig } from '../../shared/model.js';
import type { NetworkDriver } from './types.js';

/** What a driver under test gets: a runner, its own state directory and the namespace to manage. */
export interface ConformanceEnv {
  runner: Runner;
  stateDir: string;
  netns: string;
}

/** Pids of live processes whose command line mentions `needle` (to prove nothing was left running). */
export async function pidsMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle)) pids.push(Number(entry));
  }
  return pids;
}

/** Registers the network backend conformance suite for `makeDriver` (vitest describe/it). */
export function networkConformance(name: string, makeDriver: (env: ConformanceEnv) => NetworkDriver): void {
  describe(`network driver conformance: ${name}`, () => {
    const runner = new SystemRunner();
    const netns = `vltest-nc-${randomBytes(3).toString('hex')}`;
    const ip = new Ip(runner, netns);
    let stateDir = '';
    let d: NetworkDriver;

    const nat: NetworkConfig = {
      name: 'conf-nat',
      mode: 'nat',
      backend: 'linux',
      bridge: 'vlb-c0nf0001',
      mtu: 1500,
      subnet: {
        cidr: '10.231.0.0/24',
        gateway: '10.231.0.1',
        prefixLength: 24,
        dhcpStart: '10.231.0.100',
        dhcpEnd: '10.231.0.150',
        reservations: [{ mac: '52:54:00:23:10:0a', ip: '10.231.0.10', hostname: 'vm-a' }],
      },
      forwards: [{ protocol: 'tcp', hostPort: 18080, vm: 'vm-a', targetIp: '10.231.0.10', targetPort: 80 }],
    };
    const iso: NetworkConfig = {
      name: 'conf-iso',
      mode: 'isolated',
      backend: 'linux',
      bridge: 'vlb-c0nf0002',
      mtu: 1500,
      subnet: {
        cidr: '10.232.0.0/24',
        gateway: '10.232.0.1',
        prefixLength: 24,
        dhcpStart: '10.232.0.100',
        dhcpEnd: '10.232.0.150',
        reservations: [],
      },
      forwards: [],
    };
    const observed = async (n: string) => (await d.listNetworks()).find((x) => x.name === n);

    beforeAll(async () => {
      await ip.namespaces.add(netns);
      await ip.link.set('lo', { up: true });
      stateDir = await mkdtemp(join(tmpdir(), 'vmlink-netconf-'));
      d = makeDriver({ runner, stateDir, netns });
    });

    afterAll(async () => {
      try {
        for (const n of (await d?.listNetworks()) ?? []) await d.deleteNetwork(n.name).catch(() => undefined);
      } finally {
        for (const pid of await pidsMentioning(stateDir || '/nonexistent-vmlink'))
          process.kill(pid, 'SIGKILL');
        await ip.namespaces.del(netns);
        if (stateDir) await rm(stateDir, { recursive: true, force: true });
      }
    });

    it('reports kernel capabilities as booleans', async () => {
      const caps = await d.capabilities();
      for (const k of [
        'vlan',
        'vxlan',
        'macvlan',
        'bond',
        'geneve',
        'bridgeVlanFiltering',
        'nftables',
        'tap',
      ]) {
        expect(typeof caps[k], k).toBe('boolean');
      }
      expect(caps.tap).toBe(true);
      expect(await d.capabilities()).toEqual(caps);
    });

    it('lists nothing before anything was created', async () => {
      expect(await d.listNetworks()).toEqual([]);
    });

    it('creates a nat network and lists it without problems', async () => {
      await d.ensureNetwork(nat, 'hash-1');
      expect(await observed(nat.name)).toEqual({
        name: nat.name,
        bridge: nat.bridge,
        configHash: 'hash-1',
        problems: [],
      });
      const br = await ip.link.get(nat.bridge);
      expect(br?.up).toBe(true);
      const addrs = await ip.addr.list({ dev: nat.bridge, family: 'inet' });
      expect(addrs.map((a) => `${a.local}/${a.prefixLen}`)).toEqual(['10.231.0.1/24']);
    });

    it('is idempotent: a second ensure changes nothing', async () => {
      const before = await ip.link.get(nat.bridge);
      await d.ensureNetwork(nat, 'hash-1');
      expect((await ip.link.get(nat.bridge))?.index).toBe(before?.index);
      expect(await observed(nat.name)).toEqual({
        name: nat.name,
        bridge: nat.bridge,
        configHash: 'hash-1',
        problems: [],
      });
    });

    it('updates in place: mtu, DHCP range, forwards', async () => {
      const before = await ip.link.get(nat.bridge);
      const updated: NetworkConfig = {
        ...nat,
        mtu: 1400,
        subnet: { ...nat.subnet!, dhcpEnd: '10.231.0.199' },
        forwards: [
          ...nat.forwards,
          { protocol: 'udp', hostPort: 15353, vm: 'vm-a', targetIp: '10.231.0.10', targetPort: 53 },
        ],
      };
      await d.ensureNetwork(updated, 'hash-2');
      const after = await ip.link.get(nat.bridge);
      expect(after?.index).toBe(before?.index);
      expect(after?.mtu).toBe(1400);
      expect(await observed(nat.name)).toEqual({
        name: nat.name,
        bridge: nat.bridge,
        configHash: 'hash-2',
        problems: [],
      });
      await d.ensureNetwork(nat, 'hash-1');
      expect((await ip.link.get(nat.bridge))?.mtu).toBe(1500);
    });

    it('creates, re-ensures and deletes ports', async () => {
      const port = { tap: 'vlt-c0nf0001', bridge: nat.bridge, mtu: 1500 };
      expect(await d.portAttached(port.tap, port.bridge)).toBe(false);
      await d.ensurePort(port);
      await d.ensurePort(port);
      expect(await d.portAttached(port.tap, port.bridge)).toBe(true);
      expect(await d.portAttached(port.tap, 'vlb-other')).toBe(false);
      // Detached behind the driver's back: ensurePort re-attaches it.
      await ip.link.set(port.tap, { master: null });
      expect(await d.portAttached(port.tap, port.bridge)).toBe(false);
      await d.ensurePort(port);
      expect(await d.portAttached(port.tap, port.bridge)).toBe(true);
      await d.deletePort(port.tap);
      await d.deletePort(port.tap);
      expect(await d.portAttached(port.tap, port.bridge)).toBe(false);
      expect(await ip.link.get(port.tap)).toBeUndefined();
    });

    it('refuses a port on a missing bridge', async () => {
      await expect(d.ensurePort({ tap: 'vlt-c0nf0002', bridge: 'vlb-missing0', mtu: 1500 })).rejects.toThrow(
        /not found/,
      );
      expect(await ip.link.get('vlt-c0nf0002')).toBeUndefined();
    });

    it('converges after the bridge is deleted behind its back', async () => {
      await ip.link.del(nat.bridge);
      const seen = await observed(nat.name);
      expect(seen?.problems.length).toBeGreaterThan(0);
      await d.ensureNetwork(nat, 'hash-1');
      expect((await observed(nat.name))?.problems).toEqual([]);
    });

    it('converges after its address is removed behind its back', async () => {
      await ip.addr.del(nat.bridge, '10.231.0.1/24');
      expect((await observed(nat.name))?.problems.length).toBeGreaterThan(0);
      await d.ensureNetwork(nat, 'hash-1');
      expect((await observed(nat.name))?.problems).toEqual([]);
    });

    it('converges after its DHCP/DNS server is killed', async () => {
      const pids = await pidsMentioning(stateDir);
      expect(pids.length).toBeGreaterThan(0);
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 200));
      const problems = (await observed(nat.name))?.problems ?? [];
      expect(problems.length).toBeGreaterThan(0);
      await d.ensureNetwork(nat, 'hash-1');
      expect((await observed(nat.name))?.problems).toEqual([]);
    });

    it('creates an isolated network beside the nat one', async () => {
      await d.ensureNetwork(iso, 'hash-iso');
      expect((await d.listNetworks()).map((n) => [n.name, n.problems])).toEqual([
        [iso.name, []],
        [nat.name, []],
      ]);
    });

    it('refuses a second network on a bridge that is taken, changing nothing', async () => {
      await expect(d.ensureNetwork({ ...iso, name: 'conf-dup' }, 'h')).rejects.toThrow(
        /already belongs|belongs to/,
      );
      expect((await d.listNetworks()).map((n) => n.name)).toEqual([iso.name, nat.name]);
    });

    it('deletes networks; deleting a missing one is fine; nothing is left', async () => {
      await d.deleteNetwork(nat.name);
      await d.deleteNetwork(nat.name);
      await d.deleteNetwork(iso.name);
      await d.deleteNetwork('never-existed');
      expect(await d.listNetworks()).toEqual([]);
      expect(await ip.link.get(nat.bridge)).toBeUndefined();
      expect(await ip.link.get(iso.bridge)).toBeUndefined();
      expect(await pidsMentioning(stateDir)).toEqual([]);
    });
  });
}
