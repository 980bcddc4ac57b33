import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadSpecFile } from '../spec/load.js';
import { SecurityGroupSchema, type SecurityGroupSpec } from '../spec/schema.js';
import { type Endpoint, endpointsOf, type VmEndpoint } from './expect.js';
import {
  expectPing,
  type GroupContext,
  groupContextOf,
  groupVerdict,
  rulePorts,
  sourceAsSeen,
  unruledPort,
} from './security-groups.js';

const example = fileURLToPath(new URL('../../examples/security-groups.yaml', import.meta.url));

/** The example's endpoints with the addresses its guests would get (DHCP on the LAN for app1 and front1). */
function exampleLab() {
  const spec = loadSpecFile(example);
  const endpoints = endpointsOf(spec, {});
  const addresses: Record<string, string> = {
    web1: '10.10.0.10',
    app1: '192.168.50.101',
    front1: '192.168.50.102',
  };
  for (const e of endpoints) if (e.kind === 'vm') e.address = addresses[e.vm];
  const ctx = groupContextOf(spec, endpoints);
  const by = (id: string) => endpoints.find((e) => e.id === id)!;
  return { spec, endpoints, ctx, by };
}

describe('security-group expectations on examples/security-groups.yaml', () => {
  const { ctx, by } = exampleLab();
  const [host1, pc1, upstream, web1, app1, front1] = [
    'host1',
    'pc1',
    'upstream',
    'web1',
    'app1',
    'front1',
  ].map(by) as [Endpoint, Endpoint, Endpoint, VmEndpoint, VmEndpoint, VmEndpoint];
  const ping = (s: Endpoint, d: Endpoint) => expectPing(s, d, [], ctx);
  const tcp = (s: Endpoint, d: Endpoint, port: number) => groupVerdict(s, d, { protocol: 'tcp', port }, ctx);

  it('carries each NIC its groups', () => {
    expect(app1.groups).toEqual(['app', 'ssh']);
    expect(front1.groups).toEqual(['web', 'locked']);
    expect(by('host1').kind).toBe('host');
  });

  it('pings into a NIC with groups only where an icmp rule matches the source as the NIC sees it', () => {
    // The host reaches the nat VM from its gateway address 10.10.0.1, outside web's LAN-only icmp rule.
    expect(sourceAsSeen(host1, web1, ctx)).toEqual({ address: '10.10.0.1' });
    expect(ping(host1, web1)).toMatchObject({ expected: false, blockedBy: 'security-group' });
    expect(ping(host1, web1).verdict?.reason).toBe('no ingress rule of web allows icmp from 10.10.0.1');
    // front1 (web) from the peer and the host on the LAN: allowed by the LAN cidr rule.
    expect(ping(pc1, front1)).toMatchObject({ expected: true });
    expect(ping(pc1, front1).verdict?.reason).toBe('allowed in by web: ingress icmp from 192.168.50.0/24');
    expect(ping(host1, front1).expected).toBe(true);
    // app1 lets icmp in only from web members on its L2: front1 yes, the peer no.
    expect(ping(front1, app1).expected).toBe(true);
    expect(ping(pc1, app1)).toMatchObject({ expected: false, blockedBy: 'security-group' });
  });

  it('a web member routed off its nat network is masqueraded: the remote-group rule does not match it', () => {
    expect(sourceAsSeen(web1, app1, ctx)).toEqual({ address: '192.168.50.10' });
    expect(ping(web1, app1)).toMatchObject({ expected: false, blockedBy: 'security-group' });
    expect(ping(web1, app1).verdict?.reason).toBe(
      'no ingress rule of app, ssh allows icmp from 192.168.50.10',
    );
  });

  it('the topology comes first: a path it blocks stays blocked by the topology', () => {
    expect(ping(upstream, front1)).toEqual({ expected: false, blockedBy: 'topology' });
    expect(ping(pc1, web1)).toEqual({ expected: false, blockedBy: 'topology' });
  });

  it('an egress-restricted NIC sends only what its egress rules allow; replies are never judged', () => {
    expect(ping(front1, pc1).expected).toBe(true);
    expect(ping(front1, upstream)).toMatchObject({ expected: false, blockedBy: 'security-group' });
    expect(ping(front1, upstream).verdict?.reason).toBe(
      'no egress rule of web, locked allows icmp to 203.0.113.10',
    );
    // front1 -> app1 tcp 8080: out by the remote-group egress rule, in by the remote-group ingress rule.
    expect(tcp(front1, app1, 8080)).toEqual({
      allowed: true,
      reason:
        'allowed in by app: ingress tcp 8080-8089 from group web; out by locked: egress tcp 8080-8089 to group app',
    });
    expect(tcp(front1, app1, 22)?.allowed).toBe(false);
    // A NIC without egress rules is not judged on the way out; a destination without groups not on the way in.
    expect(groupVerdict(pc1, host1, { protocol: 'icmp' }, ctx)).toBeUndefined();
    expect(groupVerdict(app1, pc1, { protocol: 'icmp' }, ctx)).toBeUndefined();
  });

  it('port rules: single ports, ranges (first port probed), cidr and group remotes', () => {
    expect(tcp(pc1, app1, 22)?.allowed).toBe(true);
    expect(tcp(host1, app1, 22)?.reason).toBe('no ingress rule of app, ssh allows tcp 22 from 192.168.50.10');
    expect(tcp(pc1, app1, 8085)?.allowed).toBe(false);
    expect(tcp(pc1, web1, 80)?.allowed).toBe(true);
    expect(rulePorts(app1.groups!, ctx, 'tcp')).toEqual([8080, 22]);
    expect(rulePorts(front1.groups!, ctx, 'tcp')).toEqual([80]);
    expect(unruledPort(app1.groups!, ctx, 'tcp')).toBe(9);
  });
});

describe('rule matching', () => {
  const group = (name: string, rules: unknown[]): SecurityGroupSpec =>
    SecurityGroupSchema.parse({ name, rules });
  const ctxOf = (...groups: SecurityGroupSpec[]): GroupContext => ({
    groups: new Map(groups.map((g) => [g.name, g])),
    hostAddress: new Map([['h1', '192.168.50.10']]),
    gatewayAddress: new Map([['ov', '10.20.0.1']]),
  });
  const vm = (id: string, extra: Partial<VmEndpoint>): VmEndpoint => ({
    id,
    kind: 'vm',
    vm: id,
    host: 'h1',
    network: 'ov',
    mode: 'vxlan',
    mac: '',
    ...extra,
  });

  it('protocol any matches icmp and every port; a rule without remote matches any source', () => {
    const ctx = ctxOf(group('all', [{}]));
    const d = vm('d', { groups: ['all'], address: '10.20.0.5' });
    const s = vm('s', { address: '10.20.0.6' });
    expect(groupVerdict(s, d, { protocol: 'icmp' }, ctx)?.allowed).toBe(true);
    expect(groupVerdict(s, d, { protocol: 'udp', port: 53 }, ctx)?.reason).toBe(
      'allowed in by all: ingress any from any',
    );
    expect(unruledPort(['all'], ctx, 'tcp')).toBe(9);
  });

  it('an empty group denies everything in; a tcp rule does not open udp or icmp', () => {
    const ctx = ctxOf(group('none', []), group('t', [{ protocol: 'tcp', ports: [80] }]));
    const s = vm('s', { address: '10.20.0.6' });
    expect(groupVerdict(s, vm('d', { groups: ['none'] }), { protocol: 'icmp' }, ctx)?.allowed).toBe(false);
    const d = vm('d', { groups: ['t'], address: '10.20.0.5' });
    expect(groupVerdict(s, d, { protocol: 'udp', port: 80 }, ctx)?.allowed).toBe(false);
    expect(groupVerdict(s, d, { protocol: 'icmp' }, ctx)?.allowed).toBe(false);
    expect(groupVerdict(s, d, { protocol: 'tcp', port: 81 }, ctx)?.allowed).toBe(false);
  });

  it('a remote-group rule matches members on the same network only, and the rule may name its own group', () => {
    const ctx = ctxOf(group('peers', [{ protocol: 'icmp', group: 'peers' }]));
    const d = vm('d', { groups: ['peers'] });
    expect(groupVerdict(vm('s', { groups: ['peers'] }), d, { protocol: 'icmp' }, ctx)?.allowed).toBe(true);
    expect(groupVerdict(vm('s', {}), d, { protocol: 'icmp' }, ctx)?.reason).toBe(
      'no ingress rule of peers allows icmp from s (an unknown address)',
    );
    const other = vm('o', { groups: ['peers'], network: 'ov2', address: '10.30.0.5' });
    expect(groupVerdict(other, d, { protocol: 'icmp' }, ctx)?.allowed).toBe(false);
  });

  it('a host reaches an overlay VM from the gateway address; a cidr rule is matched against it', () => {
    const ctx = ctxOf(group('gw', [{ protocol: 'icmp', cidr: '10.20.0.1/32' }]));
    const host: Endpoint = { id: 'h1', kind: 'host', host: 'h1', address: '192.168.50.10' };
    const d = vm('d', { groups: ['gw'], gatewayHost: 'h1' });
    expect(groupVerdict(host, d, { protocol: 'icmp' }, ctx)?.allowed).toBe(true);
  });

  it('a router cell stays unasserted, with the verdict kept for the record', () => {
    const ctx = ctxOf(group('none', []));
    const s = vm('s', { network: 'a' });
    const d = vm('d', { network: 'b', groups: ['none'] });
    const r = expectPing(s, d, [{ vm: 'r', host: 'h1', networks: ['a', 'b'] }], ctx);
    expect(r.expected).toBe('any');
    expect(r.verdict?.allowed).toBe(false);
  });
});
