// Linux network backend against real namespaces: the conformance suite, then a lab of a "host"
// namespace (the driver's), a "lan" peer at 192.168.77.2 behind the host's uplink, and "vm"
// namespaces standing in for guests (veth ends attached to the network bridges).
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { networkConformance } from '../../src/drivers/network/conformance.js';
import { pidsMentioning } from '../../src/drivers/network/conformance-env.js';
import { securityGroupConformance } from '../../src/drivers/network/conformance-security-groups.js';
import { DnsmasqManager, dnsmasqPaths, parseLeases } from '../../src/drivers/network/linux/dnsmasq.js';
import { LinuxNetworkDriver } from '../../src/drivers/network/linux/driver.js';
import { sgDropComment } from '../../src/drivers/network/linux/security-groups.js';
import { LINUX_NETWORKS_DIR } from '../../src/drivers/network/linux/state.js';
import { Ip, ipCmd } from '../../src/exec/ip.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { NetworkConfig } from '../../src/shared/model.js';

networkConformance('linux', (env) => new LinuxNetworkDriver(env));
securityGroupConformance('linux', (env) => new LinuxNetworkDriver(env), {
  // The drop counters of the port's security-group chain.
  dropCount: async (env, tap, direction) => {
    const chain = `sgp-${direction === 'ingress' ? 'in' : 'out'}-${tap}`;
    const r = await env.runner.run(['nft', 'list', 'chain', 'bridge', 'vmlink', chain], { netns: env.netns });
    const m = new RegExp(`counter packets (\\d+) .*"${sgDropComment(tap, direction)}"`).exec(r.stdout);
    if (!m) throw new Error(`no drop counter in ${chain}:\n${r.stdout}`);
    return Number(m[1]);
  },
  wipeFilters: async (env) => {
    for (const t of ['bridge vmlink', 'inet vmlink'])
      await env.runner.run(['nft', 'delete', 'table', ...t.split(' ')], { netns: env.netns });
  },
});

const runner = new SystemRunner();
const tag = randomBytes(3).toString('hex');
const HOST = `vltest-nh-${tag}`;
const LAN = `vltest-nl-${tag}`;
const VM = `vltest-nv-${tag}`;
const VM2 = `vltest-ni-${tag}`;
const NAMESPACES = [HOST, LAN, VM, VM2];
const VM_MAC = '52:54:00:77:00:10';

/** Runs argv in a namespace; resolves to the exit code and output (never throws on exit status). */
async function inNs(ns: string, argv: string[], timeoutMs = 15_000) {
  return runner.run(argv, { netns: ns, allowFailure: true, timeoutMs });
}
/** Body of an HTTP GET from inside a namespace, or undefined (busybox 1.35 wget -T segfaults: the runner times it out). */
async function httpGet(ns: string, url: string, timeoutMs = 3000): Promise<string | undefined> {
  try {
    const r = await inNs(ns, ['/bin/busybox', 'wget', '-q', '-O', '-', url], timeoutMs);
    return r.code === 0 ? r.stdout : undefined;
  } catch {
    return undefined;
  }
}
const ping = async (ns: string, dst: string, count = 2) =>
  (await inNs(ns, ['/bin/busybox', 'ping', '-c', String(count), '-W', '1', dst])).code === 0;

const natNet: NetworkConfig = {
  name: 'it-nat',
  mode: 'nat',
  backend: 'linux',
  bridge: 'vlb-17000001',
  mtu: 1500,
  uplink: 'up0',
  subnet: {
    cidr: '10.77.0.0/24',
    gateway: '10.77.0.1',
    prefixLength: 24,
    dhcpStart: '10.77.0.100',
    dhcpEnd: '10.77.0.150',
    reservations: [{ mac: VM_MAC, ip: '10.77.0.10', hostname: 'vm1' }],
  },
  forwards: [{ protocol: 'tcp', hostPort: 8080, vm: 'vm1', targetIp: '10.77.0.10', targetPort: 80 }],
};
const isoNet: NetworkConfig = {
  name: 'it-iso',
  mode: 'isolated',
  backend: 'linux',
  bridge: 'vlb-17000002',
  mtu: 1500,
  subnet: {
    cidr: '10.78.0.0/24',
    gateway: '10.78.0.1',
    prefixLength: 24,
    dhcpStart: '10.78.0.100',
    dhcpEnd: '10.78.0.150',
    reservations: [],
  },
  forwards: [],
};
const bridgedNet: NetworkConfig = {
  name: 'it-lan',
  mode: 'bridge',
  backend: 'linux',
  bridge: 'vlb-17000003',
  mtu: 1500,
  uplink: 'up1',
  forwards: [],
};

describe('linux network backend in a lab', () => {
  const host = new Ip(runner, HOST);
  const lan = new Ip(runner, LAN);
  let stateDir = '';
  let work = '';
  let d: LinuxNetworkDriver;
  const started: number[] = [];

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'vmlink-netlab-'));
    work = await mkdtemp(join(tmpdir(), 'vmlink-netlab-work-'));
    for (const ns of NAMESPACES) {
      await host.namespaces.add(ns);
      await runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
    }
    // host up0 (192.168.77.1) <-> lan eth0 (192.168.77.2): the LAN the nat network masquerades onto.
    // host up1 (192.168.78.1, default route) <-> lan eth1 (192.168.78.2): the uplink of the bridge-mode network.
    await host.batch([
      ipCmd.linkAdd({ name: 'up0', kind: 'veth', peer: 'eth0', peerNetns: LAN }),
      ipCmd.linkAdd({ name: 'up1', kind: 'veth', peer: 'eth1', peerNetns: LAN }),
      ipCmd.linkSet('up0', { up: true }),
      ipCmd.linkSet('up1', { up: true }),
      ipCmd.addrAdd('up0', '192.168.77.1/24'),
      ipCmd.addrAdd('up1', '192.168.78.1/24'),
      ipCmd.routeAdd({ dst: 'default', gateway: '192.168.78.2', dev: 'up1' }),
    ]);
    await lan.batch([
      ipCmd.linkSet('eth0', { up: true }),
      ipCmd.linkSet('eth1', { up: true }),
      ipCmd.addrAdd('eth0', '192.168.77.2/24'),
      ipCmd.addrAdd('eth1', '192.168.78.2/24'),
      ipCmd.addrAdd('lo', '10.200.0.1/32'),
    ]);
    // The lan peer counts what reaches it, by source address.
    await runner.run(['nft', '-f', '-'], {
      netns: LAN,
      input: [
        'table ip probe {',
        '  chain input { type filter hook input priority 0; policy accept;',
        '    ip saddr 192.168.77.1 icmp type echo-request counter',
        '    ip saddr 10.77.0.0/24 counter',
        '  }',
        '}',
      ].join('\n'),
    });
    // A "vm": veth end in its own namespace, the other end a port of the nat bridge (attached later).
    await host.batch([
      ipCmd.linkAdd({ name: 'vm1p', kind: 'veth', peer: 'eth0', peerNetns: VM }),
      ipCmd.linkAdd({ name: 'vm2p', kind: 'veth', peer: 'eth0', peerNetns: VM2 }),
    ]);
    await new Ip(runner, VM).link.set('eth0', { address: VM_MAC, up: true });
    await new Ip(runner, VM2).link.set('eth0', { up: true });
    d = new LinuxNetworkDriver({ runner, stateDir, netns: HOST });
  });

  afterAll(async () => {
    try {
      for (const n of (await d?.listNetworks().catch(() => [])) ?? [])
        await d.deleteNetwork(n.name).catch(() => undefined);
    } finally {
      for (const pid of started) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      for (const pid of await pidsMentioning(stateDir || '/nonexistent-vmlink')) process.kill(pid, 'SIGKILL');
      for (const ns of NAMESPACES) await host.namespaces.del(ns);
      if (stateDir) await rm(stateDir, { recursive: true, force: true });
      if (work) await rm(work, { recursive: true, force: true });
    }
    // Nothing left behind: no namespaces, no dnsmasq with our files.
    const left = (await runner.run(['ip', 'netns', 'list'])).stdout;
    for (const ns of NAMESPACES) expect(left).not.toContain(ns);
    expect(await pidsMentioning(stateDir)).toEqual([]);
  });

  it('nat: creates the network and its port, dnsmasq answers DHCP with the reservation', async () => {
    await d.ensureNetwork(natNet, 'nat-1');
    await host.link.set('vm1p', { master: natNet.bridge, up: true });
    expect((await d.listNetworks()).find((n) => n.name === natNet.name)?.problems).toEqual([]);

    const out = join(work, 'dhcp.env');
    const script = join(work, 'udhcpc.sh');
    await writeFile(script, `#!/bin/sh\necho "$1 ip=$ip mask=$mask router=$router dns=$dns" >> ${out}\n`);
    await chmod(script, 0o755);
    const r = await inNs(
      VM,
      ['/bin/busybox', 'udhcpc', '-i', 'eth0', '-n', '-q', '-f', '-t', '5', '-T', '2', '-s', script],
      30_000,
    );
    expect(r.code, r.stderr).toBe(0);
    const got = await readFile(out, 'utf8');
    expect(got).toContain('bound ip=10.77.0.10 mask=24 router=10.77.0.1 dns=10.77.0.1');
    const leases = parseLeases(
      await readFile(dnsmasqPaths(join(stateDir, LINUX_NETWORKS_DIR, natNet.name)).leaseFile, 'utf8'),
    );
    expect(leases).toMatchObject([{ mac: VM_MAC, ip: '10.77.0.10' }]);
    // Apply the lease as the guest's DHCP client would.
    const vm = new Ip(runner, VM);
    await vm.batch([
      ipCmd.addrAdd('eth0', '10.77.0.10/24'),
      ipCmd.routeAdd({ dst: 'default', gateway: '10.77.0.1' }),
    ]);
  });

  it('upgrade: a network in the legacy shared directory moves to network-linux/, its dnsmasq restarted from there', async () => {
    // Put the nat network back the way an older vmlink left it: files in networks/<name>/, dnsmasq running from there.
    const mgr = new DnsmasqManager(runner, HOST);
    const newDir = join(stateDir, LINUX_NETWORKS_DIR, natNet.name);
    const oldDir = join(stateDir, 'networks', natNet.name);
    await mgr.stop(dnsmasqPaths(newDir));
    await mkdir(join(stateDir, 'networks'));
    await rename(newDir, oldDir);
    await mgr.ensure(natNet, dnsmasqPaths(oldDir), false);
    expect(await pidsMentioning(`${oldDir}/`)).toHaveLength(1);

    await d.upgradeState();
    expect(await pidsMentioning(`${oldDir}/`)).toEqual([]);
    expect(await readdir(stateDir)).not.toContain('networks');
    expect((await d.listNetworks()).find((n) => n.name === natNet.name)?.problems).toEqual([]);
    expect(await d.appliedConfig(natNet.name)).toEqual({ config: natNet, configHash: 'nat-1' });
    // The lease went with the directory, and dnsmasq answers again from the new place.
    expect(parseLeases(await readFile(dnsmasqPaths(newDir).leaseFile, 'utf8'))).toMatchObject([
      { mac: VM_MAC, ip: '10.77.0.10' },
    ]);
    const r = await inNs(
      VM,
      ['/bin/busybox', 'udhcpc', '-i', 'eth0', '-n', '-q', '-t', '5', '-T', '2', '-s', '/bin/true'],
      30_000,
    );
    expect(r.code, r.stderr).toBe(0);
    await d.upgradeState(); // a second start: nothing to do
    expect(await pidsMentioning(`${newDir}/`)).toHaveLength(1);
  });

  it('nat: the vm reaches the lan peer through masquerade (the peer sees the host address)', async () => {
    expect(await ping(VM, '10.77.0.1')).toBe(true);
    expect(await ping(VM, '192.168.77.2')).toBe(true);
    const counters = (await inNs(LAN, ['nft', 'list', 'table', 'ip', 'probe'])).stdout;
    const packets = (re: RegExp) => Number(re.exec(counters)?.[1] ?? -1);
    expect(
      packets(/ip saddr 192\.168\.77\.1 icmp type echo-request counter packets (\d+)/),
    ).toBeGreaterThanOrEqual(2);
    expect(packets(/ip saddr 10\.77\.0\.0\/24 counter packets (\d+)/)).toBe(0);
  });

  it('nat: the lan peer cannot reach the vm private address, even with a route to it', async () => {
    await lan.route.add({ dst: '10.77.0.0/24', gateway: '192.168.77.1' });
    expect(await ping(LAN, '10.77.0.10', 1)).toBe(false);
  });

  it('nat: a port forward from host:8080 reaches the vm port 80, from the peer and from the host', async () => {
    const www = join(work, 'www');
    await mkdir(www, { recursive: true });
    await writeFile(join(www, 'index.html'), 'hello from vm1\n');
    started.push(
      await runner.spawnDetached(['/bin/busybox', 'httpd', '-f', '-p', '80', '-h', www], { netns: VM }),
    );
    const fetch = async (ns: string) => {
      for (let i = 0; i < 20; i++) {
        const body = await httpGet(ns, 'http://192.168.77.1:8080/');
        if (body !== undefined) return body;
        await new Promise((res) => setTimeout(res, 200));
      }
      return undefined;
    };
    expect(await fetch(LAN)).toBe('hello from vm1\n');
    expect(await fetch(HOST)).toBe('hello from vm1\n');
    // The vm itself serves the page; direct access to the private port stays closed to the peer.
    expect(await httpGet(VM, 'http://10.77.0.10/')).toBe('hello from vm1\n');
    expect(await httpGet(LAN, 'http://10.77.0.10/', 2000)).toBeUndefined();
  });

  it("a change to one network leaves the other networks' rules and their counters alone", async () => {
    const masq = async () => {
      const chain = (await inNs(HOST, ['nft', 'list', 'chain', 'inet', 'vmlink', `masq-${natNet.bridge}`]))
        .stdout;
      return Number(/counter packets (\d+)/.exec(chain)?.[1] ?? -1);
    };
    expect(await ping(VM, '192.168.77.2', 1)).toBe(true);
    const before = await masq();
    expect(before).toBeGreaterThan(0);
    const extra: NetworkConfig = {
      ...isoNet,
      name: 'it-extra',
      bridge: 'vlb-17000009',
      subnet: {
        ...isoNet.subnet!,
        cidr: '10.79.0.0/24',
        gateway: '10.79.0.1',
        dhcpStart: '10.79.0.100',
        dhcpEnd: '10.79.0.150',
      },
    };
    await d.ensureNetwork(extra, 'extra-1');
    expect(await masq()).toBeGreaterThanOrEqual(before);
    await d.deleteNetwork(extra.name);
    expect(await masq()).toBeGreaterThanOrEqual(before);
    expect((await inNs(HOST, ['nft', 'list', 'table', 'inet', 'vmlink'])).stdout).not.toContain(
      'vlb-17000009',
    );
  });

  it('isolated: the vm reaches its gateway but neither the lan peer nor the nat network', async () => {
    await d.ensureNetwork(isoNet, 'iso-1');
    await host.link.set('vm2p', { master: isoNet.bridge, up: true });
    const vm2 = new Ip(runner, VM2);
    await vm2.batch([
      ipCmd.addrAdd('eth0', '10.78.0.10/24'),
      ipCmd.routeAdd({ dst: 'default', gateway: '10.78.0.1' }),
    ]);
    expect(await ping(VM2, '10.78.0.1')).toBe(true);
    expect(await ping(VM2, '192.168.77.2', 1)).toBe(false);
    expect(await ping(VM2, '10.77.0.10', 1)).toBe(false);
    expect(await ping(VM, '10.78.0.10', 1)).toBe(false);
    // The nat network still works beside it.
    expect(await ping(VM, '192.168.77.2')).toBe(true);
    expect((await d.listNetworks()).map((n) => [n.name, n.problems])).toEqual([
      [isoNet.name, []],
      [natNet.name, []],
    ]);
  });

  it('bridge mode: enslaves the uplink, moves its address and default route, keeps connectivity', async () => {
    expect(await ping(HOST, '10.200.0.1')).toBe(true);
    await d.ensureNetwork(bridgedNet, 'lan-1');
    expect((await host.link.get('up1'))?.master).toBe(bridgedNet.bridge);
    expect(
      (await host.addr.list({ dev: bridgedNet.bridge, family: 'inet' })).map(
        (a) => `${a.local}/${a.prefixLen}`,
      ),
    ).toEqual(['192.168.78.1/24']);
    expect(await host.addr.list({ dev: 'up1', family: 'inet' })).toEqual([]);
    const dflt = (await host.route.list()).find((r) => r.dst === 'default');
    expect(dflt).toMatchObject({ gateway: '192.168.78.2', dev: bridgedNet.bridge });
    expect(await ping(HOST, '192.168.78.2')).toBe(true);
    expect(await ping(HOST, '10.200.0.1')).toBe(true);
    expect((await d.listNetworks()).find((n) => n.name === bridgedNet.name)).toEqual({
      name: bridgedNet.name,
      bridge: bridgedNet.bridge,
      configHash: 'lan-1',
      problems: [],
      config: bridgedNet,
    });
    // Idempotent.
    await d.ensureNetwork(bridgedNet, 'lan-1');
    expect((await d.listNetworks()).find((n) => n.name === bridgedNet.name)?.problems).toEqual([]);
  });

  it('bridge mode: delete gives the uplink its address and route back', async () => {
    await d.deleteNetwork(bridgedNet.name);
    expect(await host.link.get(bridgedNet.bridge)).toBeUndefined();
    expect((await host.link.get('up1'))?.master).toBeUndefined();
    expect(
      (await host.addr.list({ dev: 'up1', family: 'inet' })).map((a) => `${a.local}/${a.prefixLen}`),
    ).toEqual(['192.168.78.1/24']);
    expect((await host.route.list()).find((r) => r.dst === 'default')).toMatchObject({
      gateway: '192.168.78.2',
      dev: 'up1',
    });
    expect(await ping(HOST, '10.200.0.1')).toBe(true);
  });

  it('deleting every network removes the nftables table and every dnsmasq', async () => {
    await d.deleteNetwork(natNet.name);
    await d.deleteNetwork(isoNet.name);
    const tables = (await inNs(HOST, ['nft', 'list', 'tables'])).stdout;
    expect(tables).not.toContain('vmlink');
    expect(await pidsMentioning(stateDir)).toEqual([]);
    expect(await d.listNetworks()).toEqual([]);
  });
});
