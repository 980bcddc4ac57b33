// Security-group conformance (issue 9): the lifecycle of `ensureSecurityGroup` / `deleteSecurityGroup` /
// `listSecurityGroups`, and the semantics of shared/security-groups.ts checked with real traffic between small
// namespaces acting as guests, each behind a port the driver made. Call it from an integration test:
//   securityGroupConformance('linux', (env) => new LinuxNetworkDriver(env), { ... });
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ip, ipCmd } from '../../exec/ip.js';
import { SystemRunner } from '../../exec/runner.js';
import type { NetworkBackend, NetworkConfig } from '../../shared/model.js';
import type { SecurityGroupConfig, SecurityGroupRuleConfig } from '../../shared/security-groups.js';
import { type ConformanceEnv, pidsMentioning } from './conformance-env.js';
import type { NetworkDriver, PortConfig } from './types.js';

/** Backend-specific knobs of the security-group suite. */
export interface SecurityGroupConformanceOptions {
  /**
   * The networks of the guests (default: isolated networks of the backend). Index 0 holds the main guests; index 1,
   * on another bridge, holds guests with the same addresses (conntrack must keep the two apart). A second network on
   * the same bridge as the first skips that case. Guests use 10.236.0.11-13 on both (the host checks need the first
   * network's gateway in 10.236.0.0/24).
   */
  network?: (backend: NetworkBackend, index: 0 | 1) => NetworkConfig;
  /**
   * Puts a guest behind port `tap` (made by `ensurePort`): default, the tap is replaced by a veth of the same name on
   * the bridge whose peer (eth0) sits in the guest's namespace — the linux backend keys its filters by port name.
   */
  attachGuest?: (env: ConformanceEnv, port: PortConfig, guestNs: string) => Promise<void>;
  /** Packets a port's security groups dropped in one direction (linux: the `sg:<tap> ...` counters); optional. */
  dropCount?: (env: ConformanceEnv, tap: string, direction: 'ingress' | 'egress') => Promise<number>;
  /** Empties the backend's filters as a reboot would (linux: its nftables tables); with it, restore is tested. */
  wipeFilters?: (env: ConformanceEnv) => Promise<void>;
}

const rule = (r: Partial<SecurityGroupRuleConfig>): SecurityGroupRuleConfig => ({
  direction: 'ingress',
  protocol: 'any',
  ...r,
});

/** Registers the security-group conformance suite for `makeDriver` (vitest describe/it). */
/** The subnet the suite's guests use (10.236.0.11-13); a backend's own `network` should put its gateway there. */
export const SG_CONFORMANCE_SUBNET: NonNullable<NetworkConfig['subnet']> = {
  cidr: '10.236.0.0/24',
  gateway: '10.236.0.1',
  prefixLength: 24,
  dhcpStart: '10.236.0.100',
  dhcpEnd: '10.236.0.150',
  reservations: [],
};

export function securityGroupConformance(
  name: string,
  makeDriver: (env: ConformanceEnv) => NetworkDriver,
  opts: SecurityGroupConformanceOptions = {},
): void {
  describe(`security group conformance: ${name}`, () => {
    const runner = new SystemRunner();
    const tag = randomBytes(3).toString('hex');
    const netns = `vltest-sg-${tag}`;
    const guestNs = (n: string) => `vltest-sg${n}-${tag}`;
    const ip = new Ip(runner, netns);
    const backend = (name === 'ovs' ? 'ovs' : 'linux') as NetworkBackend;
    const net: NetworkConfig = opts.network?.(backend, 0) ?? {
      name: 'conf-sg',
      mode: 'isolated',
      backend,
      bridge: 'vlb-c0nf05a0',
      mtu: 1500,
      subnet: { ...SG_CONFORMANCE_SUBNET },
      forwards: [],
    };
    const net2: NetworkConfig = opts.network?.(backend, 1) ?? {
      ...net,
      name: 'conf-sg2',
      bridge: 'vlb-c0nf05a1',
      subnet: {
        ...net.subnet!,
        cidr: '10.237.0.0/24',
        gateway: '10.237.0.1',
        dhcpStart: '10.237.0.100',
        dhcpEnd: '10.237.0.150',
      },
    };
    const twoBridges = net2.bridge !== net.bridge;
    // Guests: a is in groups web and ssh, b in client, c in none; a2 and x2 (net2) have a's and c's addresses.
    const guest = (n: string, last: number, groups?: string[], on = net) => ({
      ns: guestNs(n),
      addr: `10.236.0.${last}`,
      port: {
        tap: `vlt-sg${n}-${tag}`.slice(0, 15),
        bridge: on.bridge,
        mtu: on.mtu,
        security: {
          mac: `52:54:00:36:${on === net ? '00' : '01'}:${last.toString(16).padStart(2, '0')}`,
          addresses: [`10.236.0.${last}`],
        },
        ...(groups ? { securityGroups: groups } : {}),
      } satisfies PortConfig,
    });
    const a = guest('a', 11, ['web', 'ssh']);
    const b = guest('b', 12, ['client']);
    const c = guest('c', 13);
    const a2 = guest('a2', 11, ['zone'], net2);
    const x2 = guest('x2', 13, undefined, net2);
    const guests = [a, b, c, ...(twoBridges ? [a2, x2] : [])];
    let env: ConformanceEnv;
    let d: NetworkDriver;
    const servers: number[] = [];
    const group = (
      g: string,
      rules: SecurityGroupRuleConfig[],
      memberMacs: string[] = [],
    ): SecurityGroupConfig => ({
      name: g,
      rules,
      memberMacs,
    });
    const macsOf = (...gs: (typeof a)[]) => gs.map((x) => x.port.security.mac).sort();

    const run = (ns: string, argv: string[], timeoutMs = 5000) =>
      runner.run(argv, { netns: ns, allowFailure: true, timeoutMs });
    const pings = async (from: typeof a, to: string) =>
      (await run(from.ns, ['ping', '-c', '1', '-W', '1', to])).code === 0;
    const connects = async (from: typeof a, to: string, port: number) => {
      const r = await run(from.ns, ['/bin/busybox', 'nc', '-w', '1', to, String(port)]);
      return r.code === 0 && r.stdout.includes('open');
    };
    // One UDP datagram from `port` (unless `to` is '-'), then, with `listen`, what arrives on it within 3 s.
    // One datagram from `g`'s `port` (or, with `repeat`, that many 200 ms apart: a listener whose Python starts late
    // on a loaded machine still hears one), then with `listen` the first one back within 5 s, or `timeout`.
    const udp = (
      g: typeof a,
      port: number,
      to: string,
      toPort: number,
      msg: string,
      listen = false,
      repeat = 1,
    ) =>
      run(
        g.ns,
        [
          'python3',
          '-c',
          [
            'import socket, sys, time',
            's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
            "s.bind(('', int(sys.argv[1])))",
            'for i in range(int(sys.argv[6])):',
            "    if sys.argv[2] == '-': break",
            '    if i: time.sleep(0.2)',
            '    s.sendto(sys.argv[4].encode(), (sys.argv[2], int(sys.argv[3])))',
            "if sys.argv[5] == 'listen':",
            '    s.settimeout(5)',
            '    try: print(s.recv(100).decode())',
            "    except socket.timeout: print('timeout')",
          ].join('\n'),
          String(port),
          to,
          String(toPort),
          msg,
          listen ? 'listen' : 'send',
          String(repeat),
        ],
        10_000,
      );
    const drops = (tap: string, dir: 'ingress' | 'egress') => opts.dropCount?.(env, tap, dir);

    beforeAll(async () => {
      await ip.namespaces.add(netns);
      await ip.link.set('lo', { up: true });
      env = { runner, netns, stateDir: await mkdtemp(join(tmpdir(), 'vmlink-sgconf-')) };
      d = makeDriver(env);
      await d.ensureNetwork(net, 'sg-net-1');
      if (twoBridges) await d.ensureNetwork(net2, 'sg-net2-1');
      for (const g of guests) {
        await ip.namespaces.add(g.ns);
        await runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: g.ns });
        await d.ensurePort(g.port);
        await (opts.attachGuest ?? attachVeth)(env, g.port, g.ns);
        const gip = new Ip(runner, g.ns);
        await gip.batch([
          ipCmd.linkSet('eth0', { address: g.port.security.mac, up: true }),
          ipCmd.addrAdd('eth0', `${g.addr}/24`),
        ]);
        // TCP 22, 80 and 8080 answer "open" on every guest.
        for (const p of [22, 80, 8080])
          servers.push(
            await runner.spawnDetached(
              ['/bin/busybox', 'nc', '-ll', '-p', String(p), '-e', '/bin/busybox', 'echo', 'open'],
              { netns: g.ns },
            ),
          );
      }
    });

    afterAll(async () => {
      try {
        for (const pid of servers) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone already
          }
        }
        for (const g of guests) await d?.deletePort(g.port.tap).catch(() => undefined);
        for (const s of (await d?.listSecurityGroups?.().catch(() => [])) ?? [])
          await d.deleteSecurityGroup?.(s.config.name).catch(() => undefined);
        await d?.deleteNetwork(net.name).catch(() => undefined);
        if (twoBridges) await d?.deleteNetwork(net2.name).catch(() => undefined);
      } finally {
        for (const pid of await pidsMentioning(env?.stateDir || '/nonexistent-vmlink'))
          process.kill(pid, 'SIGKILL');
        for (const g of guests) await ip.namespaces.del(g.ns).catch(() => undefined);
        await ip.namespaces.del(netns);
        if (env?.stateDir) await rm(env.stateDir, { recursive: true, force: true });
      }
      const left = await ip.namespaces.list();
      for (const ns of [netns, ...guests.map((g) => g.ns)]) expect(left).not.toContain(ns);
    });

    it('lists what it applied with its hash; re-ensure is idempotent, update and delete (missing too) work', async () => {
      const sg = (n: string) => d.listSecurityGroups!().then((l) => l.find((x) => x.config.name === n));
      const probe = group('probe', [rule({ protocol: 'tcp', ports: [{ from: 22, to: 22 }] })], macsOf(c));
      await d.ensureSecurityGroup!(probe, 'p-1');
      await d.ensureSecurityGroup!(probe, 'p-1');
      expect(await sg('probe')).toEqual({ config: probe, configHash: 'p-1' });
      const updated = { ...probe, rules: [rule({ protocol: 'icmp' })], memberMacs: macsOf(a, b) };
      await d.ensureSecurityGroup!(updated, 'p-2');
      expect(await sg('probe')).toEqual({ config: updated, configHash: 'p-2' });
      // A new driver instance on the same state (an agent restart) answers the same.
      const again = makeDriver(env);
      await again.upgradeState?.();
      expect((await again.listSecurityGroups!()).find((x) => x.config.name === 'probe')?.configHash).toBe(
        'p-2',
      );
      await d.deleteSecurityGroup!('probe');
      await d.deleteSecurityGroup!('probe');
      await d.deleteSecurityGroup!('never-made');
      expect(await sg('probe')).toBeUndefined();
    });

    it('a port whose groups have no rules is default-deny inbound; replies to what it started still come back', async () => {
      await d.ensureSecurityGroup!(group('web', [], macsOf(a)), 'w-0');
      await d.ensureSecurityGroup!(group('ssh', [], macsOf(a)), 's-0');
      await d.ensureSecurityGroup!(group('client', [], macsOf(b)), 'c-0');
      const before = await drops(a.port.tap, 'ingress');
      expect(await pings(c, a.addr)).toBe(false);
      expect(await connects(c, a.addr, 80)).toBe(false);
      if (before !== undefined) expect(await drops(a.port.tap, 'ingress')).toBeGreaterThan(before);
      // Outbound is open (no egress rules), and its replies are established.
      expect(await pings(a, c.addr)).toBe(true);
      expect(await connects(a, c.addr, 80)).toBe(true);
      // The host cannot reach it either, but its replies to the port come back; a port without groups is unaffected.
      const gateway = net.subnet?.gateway;
      if (gateway?.startsWith('10.236.0.')) {
        expect((await run(netns, ['ping', '-c', '1', '-W', '1', a.addr])).code).not.toBe(0);
        expect(await pings(a, gateway)).toBe(true);
      }
      expect(await pings(c, b.addr)).toBe(false);
      expect(await pings(b, c.addr)).toBe(true);
    });

    it('an ingress tcp rule opens its port only; icmp from a remote group only; a remote cidr only', async () => {
      await d.ensureSecurityGroup!(
        group(
          'web',
          [
            rule({ protocol: 'tcp', ports: [{ from: 80, to: 80 }] }),
            rule({ protocol: 'icmp', group: 'client' }),
            rule({ protocol: 'tcp', ports: [{ from: 8080, to: 8080 }], cidr: `${c.addr}/32` }),
          ],
          macsOf(a),
        ),
        'w-1',
      );
      expect(await connects(c, a.addr, 80)).toBe(true);
      expect(await connects(b, a.addr, 80)).toBe(true);
      expect(await connects(c, a.addr, 22)).toBe(false);
      expect(await pings(b, a.addr)).toBe(true);
      expect(await pings(c, a.addr)).toBe(false);
      expect(await connects(c, a.addr, 8080)).toBe(true);
      expect(await connects(b, a.addr, 8080)).toBe(false);
    });

    it('two groups on one port add up', async () => {
      expect(await connects(b, a.addr, 22)).toBe(false);
      await d.ensureSecurityGroup!(
        group('ssh', [rule({ protocol: 'tcp', ports: [{ from: 22, to: 22 }], group: 'client' })], macsOf(a)),
        's-1',
      );
      expect(await connects(b, a.addr, 22)).toBe(true);
      expect(await connects(b, a.addr, 80)).toBe(true);
      expect(await connects(c, a.addr, 22)).toBe(false);
    });

    it('remote-group rules follow the member set', async () => {
      // c joins client (its MAC in the member set): ssh from c opens, without touching group ssh.
      await d.ensureSecurityGroup!(group('client', [], macsOf(b, c)), 'c-1');
      expect(await connects(c, a.addr, 22)).toBe(true);
      await d.ensureSecurityGroup!(group('client', [], macsOf(b)), 'c-2');
      expect(await connects(c, a.addr, 22)).toBe(false);
    });

    it('egress rules restrict what leaves: only their matches, replies and address resolution', async () => {
      expect(await pings(a, c.addr)).toBe(true);
      const before = await drops(a.port.tap, 'egress');
      await d.ensureSecurityGroup!(
        group(
          'ssh',
          [
            rule({ protocol: 'tcp', ports: [{ from: 22, to: 22 }], group: 'client' }),
            rule({
              direction: 'egress',
              protocol: 'tcp',
              ports: [{ from: 80, to: 80 }],
              cidr: `${c.addr}/32`,
            }),
          ],
          macsOf(a),
        ),
        's-2',
      );
      expect(await connects(a, c.addr, 80)).toBe(true);
      expect(await connects(a, c.addr, 8080)).toBe(false);
      expect(await pings(a, c.addr)).toBe(false);
      if (before !== undefined) expect(await drops(a.port.tap, 'egress')).toBeGreaterThan(before);
      // Inbound connections it accepts still get their replies out.
      expect(await connects(b, a.addr, 22)).toBe(true);
      // An egress rule to a remote group.
      await d.ensureSecurityGroup!(
        group(
          'ssh',
          [
            rule({ protocol: 'tcp', ports: [{ from: 22, to: 22 }], group: 'client' }),
            rule({ direction: 'egress', protocol: 'icmp', group: 'client' }),
          ],
          macsOf(a),
        ),
        's-3',
      );
      expect(await pings(a, c.addr)).toBe(false);
      await d.ensureSecurityGroup!(group('client', [rule({ protocol: 'icmp' })], macsOf(b)), 'c-3');
      expect(await pings(a, b.addr)).toBe(true);
      // Without egress rules, outbound is open again.
      await d.ensureSecurityGroup!(
        group('ssh', [rule({ protocol: 'tcp', ports: [{ from: 22, to: 22 }], group: 'client' })], macsOf(a)),
        's-4',
      );
      expect(await pings(a, c.addr)).toBe(true);
    });

    it('a rule change leaves no gap for traffic other rules allow', async () => {
      // b pings a (icmp from client) without pause while group web is rewritten again and again.
      const flood = run(b.ns, ['ping', '-q', '-c', '60', '-i', '0.05', '-W', '1', a.addr], 20_000);
      for (let i = 0; i < 10; i++)
        await d.ensureSecurityGroup!(
          group(
            'web',
            [
              rule({ protocol: 'tcp', ports: [{ from: 80, to: 80 + i }] }),
              rule({ protocol: 'icmp', group: 'client' }),
            ],
            macsOf(a),
          ),
          `w-gap-${i}`,
        );
      const out = (await flood).stdout;
      expect(out).toMatch(/60 packets transmitted, 60 received/);
    });

    it.runIf(twoBridges)(
      "one bridge's flows never count as established on another (same addresses)",
      async () => {
        await d.ensureSecurityGroup!(group('zone', [], macsOf(a2)), 'z-1');
        // a (net) has a UDP flow 40000 -> c:4000; x2 (net2, c's address) sends the matching "reply" to a2 (a's address).
        const heard = udp(a2, 40000, '-', 0, '', true);
        await new Promise((r) => setTimeout(r, 300));
        await udp(a, 40000, c.addr, 4000, 'out');
        await new Promise((r) => setTimeout(r, 300));
        await udp(x2, 4000, a2.addr, 40000, 'leak', false, 10);
        expect((await heard).stdout.trim()).toBe('timeout');
        // The same datagram as a reply to a2's own flow passes: the check above could have failed.
        const reply = udp(a2, 40000, x2.addr, 4000, 'out', true);
        await new Promise((r) => setTimeout(r, 300));
        await udp(x2, 4000, a2.addr, 40000, 'reply', false, 15);
        expect((await reply).stdout.trim()).toBe('reply');
        // Deleting a group a port still names leaves that port default-deny (and is not an error).
        await d.deleteSecurityGroup!('zone');
        expect((await d.listSecurityGroups!()).some((g) => g.config.name === 'zone')).toBe(false);
        expect(await pings(x2, a2.addr)).toBe(false);
        expect(await pings(a2, x2.addr)).toBe(true);
      },
    );

    // Last: it empties the filters of the guests' ports too.
    it.runIf(opts.wipeFilters && opts.dropCount)(
      'after a reboot, the agent start restores groups and their ports',
      async () => {
        const wipe = opts.wipeFilters!;
        const count = opts.dropCount!;
        // After a reboot: the agent's start loads the groups again, then re-ensures its running VMs' ports.
        const port: PortConfig = {
          tap: `vlt-sgp-${tag}`,
          bridge: net.bridge,
          mtu: net.mtu,
          security: { mac: '52:54:00:36:00:99', addresses: ['10.236.0.99'] },
          securityGroups: ['web'],
        };
        await d.ensurePort(port);
        await wipe(env);
        await expect(count(env, port.tap, 'ingress')).rejects.toThrow();
        // A change to a group whose applied state the filters lost still applies (whole, not as a difference).
        await d.ensureSecurityGroup!(group('client', [rule({ protocol: 'icmp' })], macsOf(c)), 'c-9');
        const rebooted = makeDriver(env);
        await rebooted.upgradeState?.();
        await rebooted.ensurePort(port);
        expect(await count(env, port.tap, 'ingress')).toBe(0);
        await rebooted.deletePort(port.tap);
        expect((await rebooted.listSecurityGroups!()).map((g) => g.configHash).sort()).toEqual(
          (await d.listSecurityGroups!()).map((g) => g.configHash).sort(),
        );
      },
    );
  });
}

/** The default `attachGuest`: replaces the tap by a veth of the same name whose peer is the guest's eth0. */
async function attachVeth(env: ConformanceEnv, port: PortConfig, guestNs: string): Promise<void> {
  const ip = new Ip(env.runner, env.netns);
  await ip.tuntap.del(port.tap);
  await ip.batch([
    ipCmd.linkAdd({ name: port.tap, kind: 'veth', peer: 'eth0', peerNetns: guestNs }),
    ipCmd.linkSet(port.tap, { master: port.bridge, mtu: port.mtu, up: true }),
  ]);
}
