// VXLAN overlays of the linux network backend across three "hosts" (namespaces) on one "switch"
// namespace (the underlay LAN), each host with its own driver, state dir and "vm" namespaces
// (veth ends on the network bridge, no QEMU). Host 1 is the gateway of overlay ov1 (address, DHCP,
// masquerade to an "upstream" namespace behind it); ov2 reuses ov1's CIDR on another VNI.
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pidsMentioning } from '../../src/drivers/network/conformance-env.js';
import { LinuxNetworkDriver } from '../../src/drivers/network/linux/driver.js';
import { restoreUplink, snapshotUplink } from '../../src/drivers/network/linux/uplink.js';
import { Bridge, FLOOD_MAC } from '../../src/exec/bridge.js';
import { Ip, ipCmd } from '../../src/exec/ip.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { NetworkConfig } from '../../src/shared/model.js';

const runner = new SystemRunner();
const tag = randomBytes(3).toString('hex');
const PREFIX = `vltest-vx-${tag}`;
const SW = `${PREFIX}-sw`;
const UP = `${PREFIX}-up`;
const HOSTS = [1, 2, 3].map((i) => `${PREFIX}-h${i}`);
/** vm namespaces on ov1 (one per host) and on ov2 (hosts 1 and 2). */
const VMA = [1, 2, 3].map((i) => `${PREFIX}-a${i}`);
const VMB = [1, 2].map((i) => `${PREFIX}-b${i}`);
const NAMESPACES = [SW, UP, ...HOSTS, ...VMA, ...VMB];
const VTEP = ['192.168.50.1', '192.168.50.2', '192.168.50.3'];
const MAC_A = ['52:54:00:20:00:11', '52:54:00:20:00:12', '52:54:00:20:00:13'];
const MAC_B = ['52:54:00:20:01:11', '52:54:00:20:01:12'];

async function inNs(ns: string, argv: string[], timeoutMs = 15_000) {
  return runner.run(argv, { netns: ns, allowFailure: true, timeoutMs });
}
const ping = async (ns: string, dst: string, opts: { count?: number; size?: number; df?: boolean } = {}) => {
  const argv = ['ping', '-n', '-q', '-c', String(opts.count ?? 2), '-W', '1', '-i', '0.2'];
  if (opts.df) argv.push('-M', 'do');
  if (opts.size !== undefined) argv.push('-s', String(opts.size));
  return (await inNs(ns, [...argv, dst])).code === 0;
};
/** The MAC an address resolved to in a namespace's neighbour table. */
async function neighMac(ns: string, addr: string): Promise<string | undefined> {
  const out = JSON.parse((await inNs(ns, ['ip', '-json', 'neigh', 'show', addr])).stdout || '[]') as {
    lladdr?: string;
  }[];
  return out[0]?.lladdr;
}

function ov1(host: number, remotes: number[], mtu = 1450): NetworkConfig {
  return {
    name: 'ov1',
    mode: 'vxlan',
    backend: 'linux',
    bridge: 'vlb-0f000001',
    mtu,
    vxlan: {
      vni: 1001,
      device: 'vlx-0f000001',
      local: VTEP[host]!,
      remotes: remotes.map((r) => VTEP[r]!),
      port: 4789,
      underlay: 'eth0',
    },
    ...(host === 0
      ? {
          nat: true,
          subnet: {
            cidr: '10.20.0.0/24',
            gateway: '10.20.0.1',
            prefixLength: 24,
            dhcpStart: '10.20.0.100',
            dhcpEnd: '10.20.0.150',
            reservations: [{ mac: MAC_A[1]!, ip: '10.20.0.12', hostname: 'a2' }],
          },
        }
      : {}),
    forwards: [],
  };
}
function ov2(host: number): NetworkConfig {
  return {
    name: 'ov2',
    mode: 'vxlan',
    backend: 'linux',
    bridge: 'vlb-0f000002',
    mtu: 1450,
    vxlan: {
      vni: 1002,
      device: 'vlx-0f000002',
      local: VTEP[host]!,
      remotes: [VTEP[1 - host]!],
      port: 4789,
      underlay: 'eth0',
    },
    forwards: [],
  };
}
const others = (i: number, of = [0, 1, 2]) => of.filter((x) => x !== i);

describe('linux vxlan overlays across three hosts', () => {
  const root = new Ip(runner);
  const sw = new Ip(runner, SW);
  const hosts = HOSTS.map((ns) => new Ip(runner, ns));
  const fdb = HOSTS.map((ns) => new Bridge(runner, ns));
  const stateDirs: string[] = [];
  let work = '';
  let d: LinuxNetworkDriver[] = [];
  const flood = async (h: number, dev: string) =>
    (await fdb[h]!.fdb(dev)).filter((e) => e.mac === FLOOD_MAC && e.dst && !e.master).map((e) => e.dst);
  const problems = async (h: number, name: string) =>
    (await d[h]!.listNetworks()).find((n) => n.name === name)?.problems;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'vmlink-vxlan-work-'));
    for (const ns of NAMESPACES) {
      await root.namespaces.add(ns);
      await runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
    }
    // The underlay LAN: a switch bridge with one port per host, and a router address for default routes.
    await sw.batch([
      ipCmd.linkAdd({ name: 'sw0', kind: 'bridge' }),
      ipCmd.linkSet('sw0', { up: true }),
      ipCmd.addrAdd('sw0', '192.168.50.254/24'),
    ]);
    for (const [i, h] of hosts.entries()) {
      stateDirs.push(await mkdtemp(join(tmpdir(), `vmlink-vxlan-h${i + 1}-`)));
      await h.batch([
        ipCmd.linkAdd({ name: 'eth0', kind: 'veth', peer: `p${i + 1}`, peerNetns: SW }),
        ipCmd.linkSet('eth0', { up: true }),
        ipCmd.addrAdd('eth0', `${VTEP[i]}/24`),
        ipCmd.routeAdd({ dst: 'default', gateway: '192.168.50.254' }),
      ]);
      await sw.link.set(`p${i + 1}`, { master: 'sw0', up: true });
      // vm ends: va (ov1) on every host, vb (ov2) on hosts 1 and 2.
      await h.link.add({ name: 'va', kind: 'veth', peer: 'eth0', peerNetns: VMA[i] });
      await new Ip(runner, VMA[i]).link.set('eth0', { address: MAC_A[i], up: true });
      if (i < 2) {
        await h.link.add({ name: 'vb', kind: 'veth', peer: 'eth0', peerNetns: VMB[i] });
        await new Ip(runner, VMB[i]).link.set('eth0', { address: MAC_B[i], up: true });
      }
    }
    // Upstream behind host 1 (not on the underlay): counts sources of what reaches it.
    await hosts[0]!.batch([
      ipCmd.linkAdd({ name: 'up0', kind: 'veth', peer: 'eth0', peerNetns: UP }),
      ipCmd.linkSet('up0', { up: true }),
      ipCmd.addrAdd('up0', '203.0.113.1/24'),
    ]);
    const up = new Ip(runner, UP);
    await up.batch([ipCmd.linkSet('eth0', { up: true }), ipCmd.addrAdd('eth0', '203.0.113.2/24')]);
    await runner.run(['nft', '-f', '-'], {
      netns: UP,
      input: [
        'table ip probe {',
        '  chain input { type filter hook input priority 0; policy accept;',
        '    ip saddr 203.0.113.1 icmp type echo-request counter',
        '    ip saddr 10.20.0.0/24 counter',
        '  }',
        '}',
      ].join('\n'),
    });
    d = HOSTS.map((ns, i) => new LinuxNetworkDriver({ runner, stateDir: stateDirs[i]!, netns: ns }));
  });

  afterAll(async () => {
    try {
      for (const drv of d) {
        for (const n of await drv.listNetworks().catch(() => []))
          await drv.deleteNetwork(n.name).catch(() => undefined);
      }
    } finally {
      for (const dir of stateDirs) {
        for (const pid of await pidsMentioning(dir)) process.kill(pid, 'SIGKILL');
      }
      for (const ns of NAMESPACES) await root.namespaces.del(ns);
      for (const dir of [...stateDirs, work]) if (dir) await rm(dir, { recursive: true, force: true });
    }
    const left = (await runner.run(['ip', 'netns', 'list'])).stdout;
    expect(left).not.toContain(PREFIX);
    for (const dir of stateDirs) expect(await pidsMentioning(dir)).toEqual([]);
  });

  it('creates ov1 on three hosts and ov2 on two, each without problems, FDB = the remote VTEPs', async () => {
    for (const i of [0, 1, 2]) await d[i]!.ensureNetwork(ov1(i, others(i)), 'ov1-a');
    for (const i of [0, 1]) await d[i]!.ensureNetwork(ov2(i), 'ov2-a');
    for (const i of [0, 1, 2]) {
      expect(await problems(i, 'ov1'), `host ${i + 1}`).toEqual([]);
      expect((await flood(i, 'vlx-0f000001')).sort()).toEqual(others(i).map((r) => VTEP[r]));
      const vx = await hosts[i]!.link.get('vlx-0f000001');
      expect(vx).toMatchObject({
        kind: 'vxlan',
        master: 'vlb-0f000001',
        mtu: 1450,
        vxlan: { vni: 1001, local: VTEP[i], port: 4789, dev: 'eth0', learning: false },
      });
      await hosts[i]!.link.set('va', { master: 'vlb-0f000001', mtu: 1450, up: true });
    }
    for (const i of [0, 1]) {
      expect(await problems(i, 'ov2')).toEqual([]);
      await hosts[i]!.link.set('vb', { master: 'vlb-0f000002', mtu: 1450, up: true });
    }
    // Only the gateway host has an address on ov1's bridge; ov2 has none anywhere.
    const onBr = async (h: number, br: string) =>
      (await hosts[h]!.addr.list({ dev: br, family: 'inet' })).map((a) => `${a.local}/${a.prefixLen}`);
    expect(await onBr(0, 'vlb-0f000001')).toEqual(['10.20.0.1/24']);
    expect(await onBr(1, 'vlb-0f000001')).toEqual([]);
    expect(await onBr(0, 'vlb-0f000002')).toEqual([]);
    // Idempotent: the same config again keeps the devices.
    const before = await hosts[1]!.link.get('vlx-0f000001');
    await d[1]!.ensureNetwork(ov1(1, others(1)), 'ov1-a');
    expect((await hosts[1]!.link.get('vlx-0f000001'))?.index).toBe(before?.index);
  });

  it('DHCP across the overlay: the vm on host 2 gets its reservation from host 1', async () => {
    const out = join(work, 'dhcp.env');
    const script = join(work, 'udhcpc.sh');
    await writeFile(script, `#!/bin/sh\necho "$1 ip=$ip mask=$mask router=$router mtu=$mtu" >> ${out}\n`);
    await chmod(script, 0o755);
    const r = await inNs(
      VMA[1]!,
      [
        '/bin/busybox',
        'udhcpc',
        '-i',
        'eth0',
        '-n',
        '-q',
        '-f',
        '-t',
        '5',
        '-T',
        '2',
        '-s',
        script,
        '-O',
        'mtu',
      ],
      30_000,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await readFile(out, 'utf8')).toContain('bound ip=10.20.0.12 mask=24 router=10.20.0.1 mtu=1450');
    // Apply the lease as the guest would; the others get fixed addresses.
    await new Ip(runner, VMA[1]).batch([
      ipCmd.addrAdd('eth0', '10.20.0.12/24'),
      ipCmd.routeAdd({ dst: 'default', gateway: '10.20.0.1' }),
    ]);
    await new Ip(runner, VMA[0]).addr.add('eth0', '10.20.0.11/24');
    await new Ip(runner, VMA[2]).addr.add('eth0', '10.20.0.13/24');
    // ov2: one vm with ov1's host-2 vm address, one more.
    await new Ip(runner, VMB[0]).addr.add('eth0', '10.20.0.12/24');
    await new Ip(runner, VMB[1]).addr.add('eth0', '10.20.0.99/24');
  });

  it('same VNI: vms reach each other across hosts (and the gateway on host 1)', async () => {
    expect(await ping(VMA[0]!, '10.20.0.12')).toBe(true);
    expect(await ping(VMA[0]!, '10.20.0.13')).toBe(true);
    expect(await ping(VMA[1]!, '10.20.0.13')).toBe(true);
    expect(await ping(VMA[2]!, '10.20.0.1')).toBe(true);
    // Bridged frames on the gateway host pass its forward chain (br_netfilter): host 2 <-> host 1 vm.
    expect(await ping(VMA[1]!, '10.20.0.11')).toBe(true);
  });

  it('overlapping CIDRs on two VNIs stay apart, even with identical addresses', async () => {
    expect(await ping(VMB[1]!, '10.20.0.12')).toBe(true);
    expect(await neighMac(VMB[1]!, '10.20.0.12')).toBe(MAC_B[0]);
    expect(await ping(VMA[0]!, '10.20.0.12')).toBe(true);
    expect(await neighMac(VMA[0]!, '10.20.0.12')).toBe(MAC_A[1]);
    expect(await ping(VMA[0]!, '10.20.0.99', { count: 1 })).toBe(false);
    expect(await ping(VMB[1]!, '10.20.0.11', { count: 1 })).toBe(false);
    expect(await ping(VMB[1]!, '10.20.0.13', { count: 1 })).toBe(false);
    expect(await ping(VMB[0]!, '10.20.0.1', { count: 1 })).toBe(false);
  });

  it('nat gateway: the vm on host 2 reaches upstream behind host 1, masqueraded to host 1', async () => {
    expect(await ping(VMA[1]!, '203.0.113.2')).toBe(true);
    const counters = (await inNs(UP, ['nft', 'list', 'table', 'ip', 'probe'])).stdout;
    const packets = (re: RegExp) => Number(re.exec(counters)?.[1] ?? -1);
    expect(
      packets(/ip saddr 203\.0\.113\.1 icmp type echo-request counter packets (\d+)/),
    ).toBeGreaterThanOrEqual(2);
    expect(packets(/ip saddr 10\.20\.0\.0\/24 counter packets (\d+)/)).toBe(0);
  });

  it('mtu 1450 on a 1500 underlay: full-size DF frames cross, one byte more does not', async () => {
    expect(await ping(VMA[0]!, '10.20.0.12', { df: true, size: 1450 - 28 })).toBe(true);
    expect(await ping(VMA[0]!, '10.20.0.13', { df: true, size: 1450 - 28 })).toBe(true);
    expect(await ping(VMA[0]!, '10.20.0.12', { df: true, size: 1451 - 28, count: 1 })).toBe(false);
  });

  it('reports FDB drift and repairs it: a missing remote, a stale one', async () => {
    await fdb[0]!.exec(['fdb', 'del', FLOOD_MAC, 'dev', 'vlx-0f000001', 'dst', VTEP[2]!]);
    await fdb[0]!.exec(['fdb', 'append', FLOOD_MAC, 'dev', 'vlx-0f000001', 'dst', '192.168.50.77']);
    expect(await problems(0, 'ov1')).toEqual([
      `FDB entry for remote VTEP ${VTEP[2]} missing on vlx-0f000001`,
      'stale FDB entry for VTEP 192.168.50.77 on vlx-0f000001',
    ]);
    await d[0]!.ensureNetwork(ov1(0, others(0)), 'ov1-a');
    expect(await problems(0, 'ov1')).toEqual([]);
    expect((await flood(0, 'vlx-0f000001')).sort()).toEqual([VTEP[1], VTEP[2]]);
  });

  it('a host leaving: the others drop its FDB entry and its vm loses reach; its network goes', async () => {
    expect(await ping(VMA[2]!, '10.20.0.11')).toBe(true);
    for (const i of [0, 1]) await d[i]!.ensureNetwork(ov1(i, others(i, [0, 1])), 'ov1-b');
    expect(await flood(0, 'vlx-0f000001')).toEqual([VTEP[1]]);
    expect(await flood(1, 'vlx-0f000001')).toEqual([VTEP[0]]);
    for (const i of [0, 1]) expect(await problems(i, 'ov1')).toEqual([]);
    expect(await ping(VMA[2]!, '10.20.0.11', { count: 1 })).toBe(false);
    expect(await ping(VMA[2]!, '10.20.0.12', { count: 1 })).toBe(false);
    expect(await ping(VMA[0]!, '10.20.0.12')).toBe(true);
    await d[2]!.deleteNetwork('ov1');
    expect(await hosts[2]!.link.get('vlx-0f000001')).toBeUndefined();
    expect(await hosts[2]!.link.get('vlb-0f000001')).toBeUndefined();
    expect(await d[2]!.listNetworks()).toEqual([]);
  });

  it('uplink: snapshot, change (mtu, address, gateway) in one batch, restore exactly', async () => {
    const before = await d[2]!.observeUplink('eth0');
    expect(before).toEqual({
      device: 'eth0',
      addressDevice: 'eth0',
      mtu: 1500,
      addresses: [`${VTEP[2]}/24`],
      gateway: '192.168.50.254',
    });
    const snap = await snapshotUplink(runner, 'eth0', { netns: HOSTS[2] });
    await d[2]!.configureUplink(
      { device: 'eth0', mtu: 1400, addresses: ['192.168.50.33/24'], gateway: '192.168.50.253' },
      'up-x',
    );
    expect(await d[2]!.observeUplink('eth0')).toEqual({
      device: 'eth0',
      addressDevice: 'eth0',
      mtu: 1400,
      addresses: ['192.168.50.33/24'],
      gateway: '192.168.50.253',
      configHash: 'up-x',
    });
    await restoreUplink(runner, JSON.parse(JSON.stringify(snap)), { netns: HOSTS[2] });
    // Back as before; the hash is no longer reported since the uplink no longer matches its config.
    expect(await d[2]!.observeUplink('eth0')).toEqual(before);
    expect(await ping(HOSTS[2]!, '192.168.50.254')).toBe(true);
  });

  it('jumbo underlay: configureUplink to 9000 on each host, overlay 8950 carries full-size DF frames', async () => {
    await sw.link.set('sw0', { mtu: 9000 });
    for (const i of [0, 1]) await sw.link.set(`p${i + 1}`, { mtu: 9000 });
    for (const i of [0, 1]) {
      const cfg = { device: 'eth0', mtu: 9000, addresses: [`${VTEP[i]}/24`], gateway: '192.168.50.254' };
      await d[i]!.configureUplink(cfg, 'up-9000');
      await d[i]!.configureUplink(cfg, 'up-9000');
      expect(await d[i]!.observeUplink('eth0')).toMatchObject({ mtu: 9000, configHash: 'up-9000' });
      await d[i]!.ensureNetwork(ov1(i, others(i, [0, 1]), 8950), 'ov1-jumbo');
      expect(await problems(i, 'ov1')).toEqual([]);
      await hosts[i]!.link.set('va', { mtu: 8950 });
      await new Ip(runner, VMA[i]).link.set('eth0', { mtu: 8950 });
    }
    expect(await ping(VMA[0]!, '10.20.0.12', { df: true, size: 8950 - 28 })).toBe(true);
    expect(await ping(VMA[0]!, '10.20.0.12', { df: true, size: 8951 - 28, count: 1 })).toBe(false);
  });

  it('refuses an overlay mtu the underlay cannot carry, before any change', async () => {
    await expect(d[2]!.ensureNetwork(ov1(2, [0, 1], 1460), 'too-big')).rejects.toThrow(
      /networks\.ov1\.mtu: 1460 \+ 50 bytes of VXLAN headers exceeds the underlay eth0's mtu 1500/,
    );
    expect(await d[2]!.listNetworks()).toEqual([]);
    expect(await hosts[2]!.link.get('vlb-0f000001')).toBeUndefined();
  });

  it('deleting every network leaves no bridge, vxlan device, table or dnsmasq', async () => {
    for (const i of [0, 1]) {
      await d[i]!.deleteNetwork('ov1');
      await d[i]!.deleteNetwork('ov2');
      expect(await d[i]!.listNetworks()).toEqual([]);
      const kinds = (await hosts[i]!.link.list()).filter((l) => l.kind === 'vxlan' || l.kind === 'bridge');
      expect(kinds).toEqual([]);
      expect((await inNs(HOSTS[i]!, ['nft', 'list', 'tables'])).stdout).not.toContain('vmlink');
      expect(await pidsMentioning(stateDirs[i]!)).toEqual([]);
    }
  });
});
