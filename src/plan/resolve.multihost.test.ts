import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NetworkConfigSchema, UplinkConfigSchema, VmConfigSchema } from '../agent/wire.js';
import { loadSpec } from '../spec/load.js';
import { validSpecArb } from '../spec/spec.arbitrary.js';
import { hostAddress } from '../spec/topology.js';
import { resolveSpec, resolveUplinks } from './resolve.js';

const h8 = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 8);

const yaml = `
version: 1
site:
  environments: [{ name: production, vlans: [{ from: 100, to: 199 }] }, { name: test, vlans: [{ from: 200, to: 299 }] }]
hosts:
  - name: host1
    network: { mtu: 9000, addresses: [192.168.50.10/24], gateway: 192.168.50.1 }
    confirmTimeoutSeconds: 30
  - { name: host2 }
  - { name: host3, segments: { trunk: eth5 } }
networks:
  - { name: ov1, mode: vxlan, vni: 1001, cidr: 10.20.0.0/24, gateway: { host: host1, nat: true } }
  - { name: ov2, mode: vxlan, hosts: [host3, host2], vni: 1002, cidr: 10.21.0.0/24, backend: ovs }
  - { name: prod100, mode: vlan, vlan: 100, environment: production, segment: trunk, hosts: [host1, host2, host3], backend: ovs, cidr: 10.100.0.0/24, gateway: { host: host2 } }
  - { name: test200, mode: vlan, vlan: 200, environment: test, segment: trunk, hosts: [host1, host2, host3], backend: ovs }
  - { name: lin300, mode: vlan, vlan: 300, hosts: [host1], mtu: 1400 }
vms:
  - { name: r1, host: host3, nics: [{ network: prod100 }, { trunk: [test200, prod100] }] }
  - { name: a1, host: host2, nics: [{ network: ov1, ip: 10.20.0.10 }, { network: ov2, ip: 10.21.0.10 }, { network: prod100, ip: 10.100.0.7 }] }
  - { name: l1, host: host1, nics: [{ network: lin300 }] }
lab:
  name: mh
  lan: { cidr: 192.168.50.0/24, gateway: 192.168.50.1, mtu: 9000 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.10 }
  hosts: [{ name: host1, address: 192.168.50.10 }, { name: host2, address: 192.168.50.9 }, { name: host3, address: 192.168.50.12 }]
  segments: [{ name: trunk }]
`;

describe('resolveSpec: multi-host networks', () => {
  const spec = loadSpec(yaml);
  const d = resolveSpec(spec);
  const net = (host: string, name: string) => d[host]!.networks.find((n) => n.name === name);

  it('carries each host uplink and commit-confirm window', () => {
    expect(d.host1).toMatchObject({ uplinkDevice: 'eth0', confirmTimeoutMs: 30_000 });
    expect(d.host2).toMatchObject({ uplinkDevice: 'eth0', confirmTimeoutMs: 60_000 });
  });

  it('puts a vxlan network on every member host, with the subnet and NAT on the gateway host only', () => {
    expect(net('host1', 'ov1')).toEqual({
      name: 'ov1',
      mode: 'vxlan',
      backend: 'linux',
      bridge: 'vlb-ov1',
      mtu: 1450,
      vxlan: {
        vni: 1001,
        device: `vlx-${h8('ov1')}`,
        local: '192.168.50.10',
        remotes: ['192.168.50.9', '192.168.50.12'],
        port: 4789,
        underlay: 'eth0',
      },
      nat: true,
      uplink: 'eth0',
      subnet: {
        cidr: '10.20.0.0/24',
        gateway: '10.20.0.1',
        prefixLength: 24,
        dhcpStart: '10.20.0.100',
        dhcpEnd: '10.20.0.199',
        reservations: [{ mac: d.host2!.vms[0]!.nics[0]!.mac, ip: '10.20.0.10', hostname: 'a1' }],
      },
      forwards: [],
    });
    expect(net('host3', 'ov1')).toEqual({
      name: 'ov1',
      mode: 'vxlan',
      backend: 'linux',
      bridge: 'vlb-ov1',
      mtu: 1450,
      vxlan: {
        vni: 1001,
        device: `vlx-${h8('ov1')}`,
        local: '192.168.50.12',
        remotes: ['192.168.50.9', '192.168.50.10'],
        port: 4789,
        underlay: 'eth0',
      },
      forwards: [],
    });
  });

  it('limits a vxlan network to its hosts; remotes sorted by address', () => {
    expect(net('host1', 'ov2')).toBeUndefined();
    expect(net('host2', 'ov2')).toMatchObject({ backend: 'ovs', vxlan: { remotes: ['192.168.50.12'] } });
    expect(net('host3', 'ov2')).toMatchObject({
      vxlan: { local: '192.168.50.12', remotes: ['192.168.50.9'] },
    });
    expect(net('host2', 'ov2')!.subnet).toBeUndefined();
  });

  it('shares one OVS bridge per trunk NIC among ovs vlan networks, with the host segment NIC as trunk', () => {
    expect(net('host1', 'prod100')).toEqual({
      name: 'prod100',
      mode: 'vlan',
      backend: 'ovs',
      bridge: 'vlo-eth1',
      mtu: 1500,
      vlan: { id: 100, trunk: 'eth1' },
      forwards: [],
    });
    expect(net('host1', 'test200')).toMatchObject({
      bridge: 'vlo-eth1',
      vlan: { id: 200, trunk: 'eth1' },
    });
    expect(net('host3', 'prod100')).toMatchObject({
      bridge: 'vlo-eth5',
      vlan: { id: 100, trunk: 'eth5' },
    });
    expect(net('host2', 'prod100')!.subnet).toMatchObject({
      cidr: '10.100.0.0/24',
      gateway: '10.100.0.1',
      reservations: [{ ip: '10.100.0.7', hostname: 'a1' }],
    });
    expect(net('host2', 'prod100')!.nat).toBeUndefined();
  });

  it('gives a linux vlan network its own bridge on the default segment', () => {
    expect(net('host1', 'lin300')).toEqual({
      name: 'lin300',
      mode: 'vlan',
      backend: 'linux',
      bridge: 'vlb-lin300',
      mtu: 1400,
      vlan: { id: 300, trunk: 'eth0' },
      forwards: [],
    });
    expect(d.host1!.vms[0]!.nics[0]).toMatchObject({
      backend: 'linux',
      bridge: 'vlb-lin300',
      vlan: 300,
    });
  });

  it('resolves access and trunk NICs', () => {
    const r1 = d.host3!.vms[0]!;
    expect(r1.nics[0]).toEqual({
      network: 'prod100',
      backend: 'ovs',
      bridge: 'vlo-eth5',
      vlan: 100,
      tap: 'vlt-r1-0',
      mac: expect.stringMatching(/^52:54:00:/),
      mtu: 1500,
    });
    expect(r1.nics[1]).toEqual({
      network: 'test200',
      backend: 'ovs',
      bridge: 'vlo-eth5',
      trunk: { networks: ['test200', 'prod100'], vlans: [200, 100] },
      tap: 'vlt-r1-1',
      mac: expect.stringMatching(/^52:54:00:/),
      mtu: 1500,
    });
  });

  it('reserves fixed addresses behind a gateway, and configures them statically on overlays without one', () => {
    const a1 = d.host2!.vms[0]!;
    expect(a1.nics[0]!.staticIp).toBeUndefined();
    // The gateway host's DHCP reserves it; the VM's own host (a member) allows it on its port all the same.
    expect(a1.nics[0]!.reservedIp).toBe('10.20.0.10');
    expect(a1.nics[1]).toMatchObject({ backend: 'ovs', bridge: 'vlb-ov2', mtu: 1450 });
    expect(a1.nics[1]!.staticIp).toEqual({ address: '10.21.0.10', prefixLength: 24 });
    expect(a1.nics[1]).not.toHaveProperty('reservedIp');
    expect(a1.nics[2]!.staticIp).toBeUndefined();
    expect(a1.nics[2]!.reservedIp).toBe('10.100.0.7');
  });

  it('does not depend on the order of hosts in a network', () => {
    const s2 = loadSpec(yaml.replace('hosts: [host3, host2]', 'hosts: [host2, host3]'));
    expect(resolveSpec(s2)).toEqual(d);
  });

  it('takes underlay addresses from hosts[].address without a lab', () => {
    const s = loadSpec(`
version: 1
hosts: [{ name: a, address: 10.0.0.1, uplink: enp1s0 }, { name: b, address: 10.0.0.2 }]
networks: [{ name: o, mode: vxlan, vni: 7 }]
`);
    const r = resolveSpec(s);
    expect(r.a!.networks[0]!.vxlan).toEqual({
      vni: 7,
      device: `vlx-${h8('o')}`,
      local: '10.0.0.1',
      remotes: ['10.0.0.2'],
      port: 4789,
      underlay: 'enp1s0',
    });
  });
});

describe('resolveUplinks', () => {
  it('resolves hosts[].network into uplink configs, undefined elsewhere', () => {
    const u = resolveUplinks(loadSpec(yaml));
    expect(u).toEqual({
      host1: { device: 'eth0', mtu: 9000, addresses: ['192.168.50.10/24'], gateway: '192.168.50.1' },
      host2: undefined,
      host3: undefined,
    });
    expect(Object.keys(u)).toEqual(['host1', 'host2', 'host3']);
  });

  it('leaves out what the spec leaves out', () => {
    const u = resolveUplinks(
      loadSpec('version: 1\nhosts: [{ name: h, uplink: enp2s0, network: { mtu: 9000 } }]\n'),
    );
    expect(u.h).toEqual({ device: 'enp2s0', mtu: 9000 });
    expect(Object.keys(u.h!)).toEqual(['device', 'mtu']);
  });
});

describe('resolveSpec (property)', () => {
  it('produces wire-valid configs whose NICs find their bridges on their own host', () => {
    fc.assert(
      fc.property(validSpecArb, (raw) => {
        const spec = loadSpec(JSON.stringify(raw));
        const d = resolveSpec(spec);
        const addr = new Map(spec.hosts.map((h) => [h.name, hostAddress(spec, h)]));
        for (const [host, hd] of Object.entries(d)) {
          for (const n of hd.networks) {
            expect(NetworkConfigSchema.safeParse(n).success, JSON.stringify(n)).toBe(true);
            if (n.vxlan) {
              expect(n.vxlan.local).toBe(addr.get(host));
              expect(n.vxlan.remotes).not.toContain(n.vxlan.local);
              const others = Object.entries(d)
                .filter(([h, x]) => h !== host && x.networks.some((m) => m.name === n.name))
                .map(([h]) => addr.get(h));
              expect([...n.vxlan.remotes].sort()).toEqual([...others].sort());
            }
          }
          const subnets = Object.values(d).flatMap((x) => x.networks.filter((m) => m.subnet));
          expect(new Set(subnets.map((m) => m.name)).size).toBe(subnets.length);
          for (const vm of hd.vms) {
            expect(VmConfigSchema.safeParse(vm).success, JSON.stringify(vm)).toBe(true);
            for (const nic of vm.nics)
              for (const name of nic.trunk?.networks ?? [nic.network]) {
                const n = hd.networks.find((m) => m.name === name);
                expect(n, `${vm.name} on ${host}: ${name}`).toBeDefined();
                expect(n!.bridge).toBe(nic.bridge);
                expect(n!.backend).toBe(nic.backend);
              }
          }
        }
        for (const u of Object.values(resolveUplinks(spec)))
          if (u) expect(UplinkConfigSchema.safeParse(u).success).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
