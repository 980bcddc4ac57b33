// Conformance suite every network backend must pass, run against a real network namespace the
// suite creates (and deletes) per test file. Call it from an integration test:
//   networkConformance('linux', (env) => new LinuxNetworkDriver(env));
// Its networks are in conformance-fixtures.ts, the VLAN suite in conformance-vlan.ts, the shared environment in
// conformance-env.ts.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ip, ipCmd } from '../../exec/ip.js';
import { SystemRunner } from '../../exec/runner.js';
import { type NetworkBackend, NetworkBackends, type NetworkConfig } from '../../shared/model.js';
import { waitExited } from '../../shared/process.js';
import { type ConformanceEnv, type ConformanceOptions, pidsMentioning } from './conformance-env.js';
import { conformanceNetworks } from './conformance-fixtures.js';
import { vlanConformance } from './conformance-vlan.js';
import type { NetworkDriver } from './types.js';

/** Registers the network backend conformance suite for `makeDriver` (vitest describe/it). */
export function networkConformance(
  name: string,
  makeDriver: (env: ConformanceEnv) => NetworkDriver,
  opts: ConformanceOptions = {},
): void {
  const modes = opts.modes ?? ['nat', 'bridge', 'isolated'];
  if (modes.includes('vlan')) vlanConformance(name, makeDriver, opts);
  // Backends without nat/bridge/isolated (ovs) skip these cases; they run the vlan/vxlan ones instead.
  describe.skipIf(!modes.includes('nat'))(`network driver conformance: ${name}`, () => {
    const runner = new SystemRunner();
    const netns = `vltest-nc-${randomBytes(3).toString('hex')}`;
    const ip = new Ip(runner, netns);
    let stateDir = '';
    let d: NetworkDriver;
    // Configs name the backend under test when the suite's name is one (linux, ovs).
    const backend: NetworkBackend = (NetworkBackends as readonly string[]).includes(name)
      ? (name as NetworkBackend)
      : 'linux';
    /** Whether the driver realises `mode` on this host (its `supportedModes`, else `opts.modes`). */
    const supports = async (mode: NetworkConfig['mode']) =>
      ((await d.supportedModes?.()) ?? modes).includes(mode);

    const { nat, iso, vx, vxGw, vlan } = conformanceNetworks(backend);
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
        leases: [], // dnsmasq serves it; no client has asked yet
        config: nat,
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
        leases: [], // dnsmasq serves it; no client has asked yet
        config: nat,
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
        leases: [], // dnsmasq serves it; no client has asked yet
        config: updated,
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
      for (const pid of pids) expect(await waitExited(pid, 5_000)).toBe(true);
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

    it('vxlan: creates an overlay (bridge switches only) and a gateway overlay, both without problems', async () => {
      if (!(await supports('vxlan'))) return;
      await ip.batch([
        ipCmd.linkAdd({ name: 'vxu0', kind: 'veth', peer: 'vxu1' }),
        ipCmd.linkSet('vxu0', { up: true }),
        ipCmd.linkSet('vxu1', { up: true }),
        ipCmd.addrAdd('vxu0', '192.0.2.1/24'),
      ]);
      await d.ensureNetwork(vx, 'vx-1');
      await d.ensureNetwork(vxGw, 'vxgw-1');
      expect(await observed(vx.name)).toEqual({
        name: vx.name,
        bridge: vx.bridge,
        configHash: 'vx-1',
        problems: [],
        config: vx,
      });
      expect((await observed(vxGw.name))?.problems).toEqual([]);
      const addrs = async (br: string) =>
        (await ip.addr.list({ dev: br, family: 'inet' })).map((a) => `${a.local}/${a.prefixLen}`);
      expect(await addrs(vx.bridge)).toEqual([]);
      expect(await addrs(vxGw.bridge)).toEqual(['10.233.0.1/24']);
    });

    it('vxlan: idempotent; follows remote VTEPs joining and leaving; ports attach', async () => {
      if (!(await supports('vxlan'))) return;
      const before = await ip.link.get(vx.bridge);
      await d.ensureNetwork(vx, 'vx-1');
      expect((await ip.link.get(vx.bridge))?.index).toBe(before?.index);
      const moved: NetworkConfig = { ...vx, vxlan: { ...vx.vxlan!, remotes: ['192.0.2.2', '192.0.2.4'] } };
      await d.ensureNetwork(moved, 'vx-2');
      expect(await observed(vx.name)).toEqual({
        name: vx.name,
        bridge: vx.bridge,
        configHash: 'vx-2',
        problems: [],
        config: moved,
      });
      const port = { tap: 'vlt-c0nf0003', bridge: vx.bridge, mtu: 1450 };
      await d.ensurePort(port);
      expect(await d.portAttached(port.tap, vx.bridge)).toBe(true);
      await d.deletePort(port.tap);
    });

    it('vxlan: deleting the overlays removes their bridges', async () => {
      if (!(await supports('vxlan'))) return;
      await d.deleteNetwork(vx.name);
      await d.deleteNetwork(vxGw.name);
      expect((await d.listNetworks()).map((n) => n.name)).toEqual([iso.name, nat.name]);
      expect(await ip.link.get(vx.bridge)).toBeUndefined();
      expect(await ip.link.get(vxGw.bridge)).toBeUndefined();
      await ip.link.del('vxu0');
    });

    it('vlan: realised where supported (an access port attaches), else refused as unsupported, changing nothing', async () => {
      await ip.batch([
        ipCmd.linkAdd({ name: 'vltr0', kind: 'veth', peer: 'vltr1' }),
        ipCmd.linkSet('vltr0', { up: true }),
      ]);
      try {
        if (await supports('vlan')) {
          await d.ensureNetwork(vlan, 'vlan-1');
          expect((await observed(vlan.name))?.problems).toEqual([]);
          const port = { tap: 'vlt-c0nf0005', bridge: vlan.bridge, mtu: 1500, vlan: 100 };
          await d.ensurePort(port);
          expect(await d.portAttached(port.tap, vlan.bridge)).toBe(true);
          await d.deletePort(port.tap);
          await d.deleteNetwork(vlan.name);
        } else {
          await expect(d.ensureNetwork(vlan, 'vlan-1')).rejects.toMatchObject({ kind: 'unsupported' });
        }
        expect((await d.listNetworks()).map((n) => n.name)).toEqual([iso.name, nat.name]);
        expect(await ip.link.get(vlan.bridge)).toBeUndefined();
      } finally {
        await ip.link.del('vltr0');
      }
    });

    // The bulk forms are optional (the agent falls back to one call per object); where a backend has them they
    // must do what the calls one by one would.
    it('bulk: creates networks and ports together, stops at the first failing network, deletes together', async () => {
      if (!d.ensureNetworks || !d.deleteNetworks || !d.ensurePorts || !d.deletePorts) return;
      const sub = (i: number) => ({
        cidr: `10.24${i}.0.0/24`,
        gateway: `10.24${i}.0.1`,
        prefixLength: 24,
        dhcpStart: `10.24${i}.0.100`,
        dhcpEnd: `10.24${i}.0.150`,
        reservations: [],
      });
      const many: NetworkConfig[] = [
        { ...iso, name: 'conf-b0', bridge: 'vlb-c0nfb000', subnet: sub(0) },
        { ...nat, name: 'conf-b1', bridge: 'vlb-c0nfb001', subnet: sub(1), forwards: [] },
        { ...iso, name: 'conf-b2', bridge: 'vlb-c0nfb002', mtu: 1400, subnet: sub(2) },
      ];
      if (await supports('vxlan')) {
        await ip.batch([
          ipCmd.linkAdd({ name: 'vxb0', kind: 'veth', peer: 'vxb1' }),
          ipCmd.linkSet('vxb0', { up: true }),
          ipCmd.addrAdd('vxb0', '192.0.2.11/24'),
        ]);
        const overlay = { ...vx.vxlan!, local: '192.0.2.11', underlay: 'vxb0' };
        many.push(
          {
            ...vx,
            name: 'conf-b3',
            bridge: 'vlb-c0nfb003',
            vxlan: { ...overlay, vni: 5003, device: 'vlx-c0nfb003' },
          },
          {
            ...vxGw,
            name: 'conf-b4',
            bridge: 'vlb-c0nfb004',
            vxlan: { ...overlay, vni: 5004, device: 'vlx-c0nfb004' },
            subnet: sub(4),
          },
        );
      }
      const items = many.map((cfg) => ({ cfg, configHash: `h-${cfg.name}` }));
      try {
        expect(await d.ensureNetworks(items)).toEqual(many.map(() => ({ ok: true })));
        for (const cfg of many) {
          const o = await observed(cfg.name);
          expect(o?.problems, cfg.name).toEqual([]);
          expect(o?.configHash).toBe(`h-${cfg.name}`);
        }
        expect((await ip.link.get('vlb-c0nfb002'))?.mtu).toBe(1400);
        const b0 = await ip.link.get('vlb-c0nfb000');
        // Again: nothing to do, nothing re-created.
        expect(await d.ensureNetworks(items)).toEqual(many.map(() => ({ ok: true })));
        expect((await ip.link.get('vlb-c0nfb000'))?.index).toBe(b0?.index);

        // A network whose host port another network forwards already: the ones before it stay, it and those after do not.
        const clash: NetworkConfig = { ...nat, name: 'conf-b6', bridge: 'vlb-c0nfb006', subnet: sub(6) };
        const after: NetworkConfig = { ...iso, name: 'conf-b7', bridge: 'vlb-c0nfb007', subnet: sub(7) };
        const before: NetworkConfig = { ...iso, name: 'conf-b5', bridge: 'vlb-c0nfb005', subnet: sub(5) };
        const r = await d.ensureNetworks([before, clash, after].map((cfg) => ({ cfg, configHash: 'h' })));
        expect(r.map((x) => x.ok)).toEqual([true, false]);
        expect(String((r[1] as { error: Error }).error.message)).toMatch(/18080/);
        expect((await observed(before.name))?.problems).toEqual([]);
        expect(await observed(clash.name)).toBeUndefined();
        expect(await observed(after.name)).toBeUndefined();
        expect(await ip.link.get(clash.bridge)).toBeUndefined();
        expect(await ip.link.get(after.bridge)).toBeUndefined();
        many.push(before);

        // Ports: all or nothing.
        const ports = [0, 1, 2].map((i) => ({
          tap: `vlt-c0nfb00${i}`,
          bridge: many[i]!.bridge,
          mtu: many[i]!.mtu,
        }));
        await expect(
          d.ensurePorts([...ports, { tap: 'vlt-c0nfb0ff', bridge: 'vlb-missing0', mtu: 1500 }]),
        ).rejects.toThrow(/vlb-missing0/);
        for (const p of ports) expect(await ip.link.get(p.tap)).toBeUndefined();
        await d.ensurePorts(ports);
        await d.ensurePorts(ports);
        for (const p of ports) expect(await d.portAttached(p.tap, p.bridge)).toBe(true);
        expect((await ip.link.get('vlt-c0nfb002'))?.mtu).toBe(1400);
        await d.deletePorts([...ports.map((p) => p.tap), 'vlt-c0nfbabs']);
        for (const p of ports) expect(await ip.link.get(p.tap)).toBeUndefined();
      } finally {
        const gone = await d.deleteNetworks(many.map((c) => c.name));
        expect(gone).toEqual(many.map(() => ({ ok: true })));
        await ip.exec(ipCmd.linkDel('vxb0'), { allowFailure: true });
      }
      expect((await d.listNetworks()).map((n) => n.name)).toEqual([iso.name, nat.name]);
      for (const cfg of many) expect(await ip.link.get(cfg.bridge)).toBeUndefined();
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
