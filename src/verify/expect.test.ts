import { describe, expect, it } from 'vitest';
import { placeSpec } from '../spec/placement.js';
import { SpecSchema } from '../spec/schema.js';
import {
  addressTwins,
  type Endpoint,
  endpointsOf,
  expectCell,
  expectForward,
  expectReachable,
  routersOf,
  type VmEndpoint,
} from './expect.js';

const host: Endpoint = { id: 'h1', kind: 'host', host: 'h1', address: '192.168.50.10' };
const host2: Endpoint = { id: 'h2', kind: 'host', host: 'h2', address: '192.168.50.11' };
const peer: Endpoint = { id: 'pc', kind: 'peer', ns: 'x', address: '192.168.50.20' };
const up: Endpoint = { id: 'upstream', kind: 'upstream', ns: 'y', address: '203.0.113.10' };
const vm = (id: string, mode: 'nat' | 'bridge' | 'isolated', network = id, h = 'h1'): Endpoint => ({
  id,
  kind: 'vm',
  vm: id,
  host: h,
  network,
  mode,
  mac: '',
});
const nat = vm('nat1', 'nat', 'natnet');
const nat2 = vm('nat2', 'nat', 'natnet');
const natOther = vm('nat3', 'nat', 'othernat');
const br = vm('br1', 'bridge', 'lan');
const iso = vm('iso1', 'isolated', 'iso');
const iso2 = vm('iso2', 'isolated', 'iso');

describe('expected reachability', () => {
  it('a nat VM reaches the LAN and the upstream but not its own host; only its host and its network reach it', () => {
    for (const d of [host2, peer, up, br, nat2]) expect(expectReachable(nat, d), d.id).toBe(true);
    // The host input policy: a VM pings only its gateway address on the host its packets enter.
    expect(expectReachable(nat, host)).toBe(false);
    expect(expectReachable(host, nat)).toBe(true);
    expect(expectReachable(nat2, nat)).toBe(true);
    for (const s of [peer, up, br, natOther, host2, iso]) expect(expectReachable(s, nat), s.id).toBe(false);
  });

  it('a bridged VM is a LAN member: it and the peer reach each other directly', () => {
    expect(expectReachable(br, peer)).toBe(true);
    expect(expectReachable(peer, br)).toBe(true);
    // Its own host filters what its port sends the host; other hosts are LAN members like any.
    expect(expectReachable(br, host)).toBe(false);
    expect(expectReachable(br, host2)).toBe(true);
    expect(expectReachable(host, br)).toBe(true);
    expect(expectReachable(br, up)).toBe(true);
    expect(expectReachable(up, br)).toBe(false);
    expect(expectReachable(br, nat)).toBe(false);
  });

  it('an isolated VM reaches only its own network; its host reaches it', () => {
    expect(expectReachable(iso, iso2)).toBe(true);
    expect(expectReachable(host, iso)).toBe(true);
    for (const d of [host, peer, up, br, nat, host2]) expect(expectReachable(iso, d), d.id).toBe(false);
  });

  it('the upstream reaches nothing behind the router; everything on the LAN reaches it', () => {
    for (const d of [host, peer, br, nat]) expect(expectReachable(up, d), d.id).toBe(false);
    for (const s of [host, peer, br, nat]) expect(expectReachable(s, up), s.id).toBe(true);
  });

  it('forwards answer from the LAN, not from the upstream', () => {
    expect(expectForward(peer)).toBe(true);
    expect(expectForward(host)).toBe(true);
    expect(expectForward(up)).toBe(false);
  });
});

const mvm = (
  id: string,
  mode: 'vxlan' | 'vlan',
  network: string,
  h: string,
  extra: Partial<VmEndpoint> = {},
): VmEndpoint => ({ id, kind: 'vm', vm: id, host: h, network, mode, mac: '', ...extra });

describe('multi-host expectations', () => {
  const a1 = mvm('a1', 'vxlan', 'ov1', 'h1', { address: '10.20.0.100' });
  const a2 = mvm('a2', 'vxlan', 'ov1', 'h2', { address: '10.20.0.101' });
  // ov2 overlaps ov1's CIDR: b1 even has a1's address.
  const b1 = mvm('b1', 'vxlan', 'ov2', 'h2', { address: '10.20.0.100' });
  const g1 = mvm('g1', 'vxlan', 'ovgw', 'h2', { gatewayHost: 'h1', nat: true });
  const g2 = mvm('g2', 'vxlan', 'ovgw', 'h1', { gatewayHost: 'h1', nat: true });
  const p1 = mvm('p1', 'vxlan', 'ovpriv', 'h2', { gatewayHost: 'h1', nat: false });

  it('VMs on one vxlan network reach each other across hosts; other overlays never, overlapping CIDRs or not', () => {
    expect(expectReachable(a1, a2)).toBe(true);
    expect(expectReachable(a2, a1)).toBe(true);
    for (const [s, d] of [
      [a1, b1],
      [b1, a1],
      [a2, b1],
      [g1, a1],
      [a1, g1],
    ] as const)
      expect(expectReachable(s, d), `${s.id}->${d.id}`).toBe(false);
  });

  it('a vxlan VM without a nat gateway reaches nothing off its network, and no host reaches it', () => {
    for (const d of [host, host2, peer, up, br, nat]) expect(expectReachable(a1, d), d.id).toBe(false);
    for (const s of [host, host2, peer, up, br, nat]) expect(expectReachable(s, a1), s.id).toBe(false);
  });

  it('with gateway.nat a vxlan VM egresses like a nat VM; only its gateway host reaches it', () => {
    for (const d of [host2, peer, up, br]) expect(expectReachable(g1, d), d.id).toBe(true);
    // Its packets enter its gateway host over the overlay: that host's input policy drops them.
    expect(expectReachable(g1, host)).toBe(false);
    expect(expectReachable(host, g1)).toBe(true);
    expect(expectReachable(host, g2)).toBe(true);
    for (const s of [host2, peer, up, br, nat]) expect(expectReachable(s, g1), s.id).toBe(false);
    expect(expectReachable(g1, g2)).toBe(true);
  });

  it('a gateway without nat: its host reaches in, the VM reaches nothing out', () => {
    expect(expectReachable(host, p1)).toBe(true);
    expect(expectReachable(host2, p1)).toBe(false);
    for (const d of [host, host2, peer, up]) expect(expectReachable(p1, d), d.id).toBe(false);
  });

  it('vlan: same VLAN reaches across hosts, different VLANs are isolated unless a router joins them', () => {
    const v100a = mvm('v100a', 'vlan', 'prod100', 'h1');
    const v100b = mvm('v100b', 'vlan', 'prod100', 'h2');
    const v200 = mvm('v200', 'vlan', 'test200', 'h2');
    const v300 = mvm('v300', 'vlan', 'dev300', 'h1');
    expect(expectReachable(v100a, v100b)).toBe(true);
    expect(expectReachable(v100b, v100a)).toBe(true);
    expect(expectReachable(v100a, v200)).toBe(false);
    expect(expectCell(v100a, v200)).toBe(false);
    const routers = [{ vm: 'r1', host: 'h1', networks: ['prod100', 'test200'] }];
    expect(expectCell(v100a, v200, routers)).toBe('any');
    expect(expectCell(v200, v100b, routers)).toBe('any');
    expect(expectCell(v100a, v300, routers)).toBe(false);
    expect(expectCell(v100a, v100b, routers)).toBe(true);
    expect(expectCell(host, v200, routers)).toBe(false);
  });

  it("finds the twin that answers for an overlapping address on the source's own network", () => {
    const eps = [a1, a2, b1];
    // a2 -> b1 (10.20.0.100): on ov1 that address is a1's.
    expect(addressTwins(a2, b1, eps)).toEqual({ self: false, twins: [a1] });
    // a1 -> b1: the address is a1's own.
    expect(addressTwins(a1, b1, eps).self).toBe(true);
    expect(addressTwins(a1, a2, eps)).toEqual({ self: false, twins: [] });
    expect(addressTwins(host, b1, eps)).toEqual({ self: false, twins: [] });
    // h1 holds ov1's gateway address: for it, 10.20.0.100 is on-link on ov1, where a1 has it.
    const ga1 = { ...a1, gatewayHost: 'h1' };
    expect(addressTwins(host, b1, [ga1, a2, b1])).toEqual({ self: false, twins: [ga1] });
    expect(addressTwins(host2, b1, [ga1, a2, b1])).toEqual({ self: false, twins: [] });
  });
});

describe('endpointsOf with multi-host networks', () => {
  const spec = placeSpec(
    SpecSchema.parse({
      version: 1,
      hosts: [{ name: 'host1' }, { name: 'host2', address: '192.168.50.99' }, { name: 'host3' }],
      networks: [
        {
          name: 'ov1',
          mode: 'vxlan',
          vni: 1001,
          cidr: '10.20.0.0/24',
          gateway: { host: 'host1', nat: true },
        },
        { name: 'ov2', mode: 'vxlan', vni: 1002, cidr: '10.20.0.0/24' },
        { name: 'prod100', mode: 'vlan', vlan: 100, hosts: ['host1', 'host2'], backend: 'ovs' },
        { name: 'test200', mode: 'vlan', vlan: 200, hosts: ['host1', 'host2'], backend: 'ovs' },
      ],
      vms: [
        { name: 'a1', host: 'host1', nics: [{ network: 'ov1' }] },
        { name: 'b1', host: 'host2', nics: [{ network: 'ov2' }, { network: 'prod100' }] },
        { name: 'r1', host: 'host1', nics: [{ network: 'prod100' }, { trunk: ['prod100', 'test200'] }] },
        { name: 'off', host: 'host3', state: 'stopped', nics: [{ network: 'ov2' }] },
      ],
      lab: {
        name: 'mh',
        lan: { cidr: '192.168.50.0/24', gateway: '192.168.50.1' },
        upstream: { cidr: '203.0.113.0/24', address: '203.0.113.10' },
        hosts: [
          { name: 'host1', address: '192.168.50.10' },
          { name: 'host2', address: '192.168.50.11' },
          { name: 'host3', address: '192.168.50.12' },
        ],
        peers: [{ name: 'pc1', address: '192.168.50.20' }],
      },
    }),
  );
  const eps = endpointsOf(spec, {
    a1: ['52:54:00:00:00:01'],
    b1: ['52:54:00:00:00:02', '52:54:00:00:00:03'],
  });

  it('lists every host, the peers, the upstream and one endpoint per NIC; trunk VMs are routers', () => {
    expect(eps.map((e) => e.id)).toEqual([
      'host1',
      'host2',
      'host3',
      'pc1',
      'upstream',
      'a1',
      'b1/ov2',
      'b1/prod100',
    ]);
    expect(eps.find((e) => e.id === 'host2')).toMatchObject({ address: '192.168.50.99' });
    expect(eps.find((e) => e.id === 'a1')).toMatchObject({
      mode: 'vxlan',
      gatewayHost: 'host1',
      nat: true,
      mac: '52:54:00:00:00:01',
    });
    const b1 = eps.find((e) => e.id === 'b1/prod100') as VmEndpoint;
    expect(b1).toMatchObject({ mode: 'vlan', mac: '52:54:00:00:00:03' });
    expect(b1.gatewayHost).toBeUndefined();
    expect(routersOf(spec)).toEqual([{ vm: 'r1', host: 'host1', networks: ['prod100', 'test200'] }]);
  });
});

describe('a VM on two networks (bridged and nat): each NIC is its own endpoint', () => {
  const spec = placeSpec(
    SpecSchema.parse({
      version: 1,
      hosts: [{ name: 'host1' }],
      networks: [
        { name: 'natnet', host: 'host1', mode: 'nat', cidr: '10.10.0.0/24' },
        { name: 'lan', host: 'host1', mode: 'bridge' },
      ],
      vms: [
        { name: 'web1', host: 'host1', nics: [{ network: 'natnet' }] },
        { name: 'app1', host: 'host1', nics: [{ network: 'lan' }, { network: 'natnet' }] },
      ],
      lab: {
        name: 'qs',
        lan: { cidr: '192.168.50.0/24', gateway: '192.168.50.1' },
        upstream: { cidr: '203.0.113.0/24', address: '203.0.113.10' },
        hosts: [{ name: 'host1', address: '192.168.50.10' }],
        peers: [{ name: 'pc1', address: '192.168.50.20' }],
      },
    }),
  );
  const eps = endpointsOf(spec, {
    web1: ['52:54:00:00:00:01'],
    app1: ['52:54:00:00:00:02', '52:54:00:00:00:03'],
  });
  const byId = (id: string): Endpoint => eps.find((e) => e.id === id)!;

  it('expects per NIC: the bridged NIC is a LAN member, the nat NIC a private member of natnet', () => {
    expect(eps.map((e) => e.id)).toEqual(['host1', 'pc1', 'upstream', 'web1', 'app1/lan', 'app1/natnet']);
    const matrix: Record<string, string[]> = {};
    for (const s of eps)
      matrix[s.id] = eps
        .filter((d) => d !== s && !(s.kind === 'vm' && d.kind === 'vm' && s.vm === d.vm))
        .filter((d) => expectCell(s, d))
        .map((d) => d.id);
    expect(matrix).toEqual({
      host1: ['pc1', 'upstream', 'web1', 'app1/lan', 'app1/natnet'],
      pc1: ['host1', 'upstream', 'app1/lan'],
      upstream: [],
      web1: ['pc1', 'upstream', 'app1/lan', 'app1/natnet'],
      // The issue's case: from the bridged NIC, web1 (on natnet) is unreachable although app1's other NIC is on natnet.
      'app1/lan': ['pc1', 'upstream'],
      'app1/natnet': ['pc1', 'upstream', 'web1'],
    });
  });

  it("looks for address twins on the source NIC's own network only (its probes are bound to that NIC)", () => {
    const lanNic = { ...(byId('app1/lan') as VmEndpoint), address: '192.168.50.77' };
    const natNic = { ...(byId('app1/natnet') as VmEndpoint), address: '10.10.0.77' };
    const web1 = { ...(byId('web1') as VmEndpoint), address: '10.10.0.10' };
    const other = { ...web1, id: 'x1', vm: 'x1', network: 'othernet', mode: 'isolated' as const };
    // x1 on another network holds web1's address: only a source bound to natnet would meet web1 instead of x1.
    expect(addressTwins(natNic, other, [lanNic, natNic, web1, other])).toEqual({
      self: false,
      twins: [web1],
    });
    // From the bridged NIC the packet never meets natnet, so web1 is no twin there (app1's other NIC is on natnet).
    expect(addressTwins(lanNic, other, [lanNic, natNic, web1, other])).toEqual({ self: false, twins: [] });
    expect(
      addressTwins({ ...natNic, id: 'y', vm: 'y', network: 'lan' }, other, [natNic, web1, other]).twins,
    ).toEqual([]);
  });
});
