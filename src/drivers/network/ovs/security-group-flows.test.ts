import { describe, expect, it } from 'vitest';
import type { OvsPort } from '../../../exec/ovs.js';
import type { SecurityGroupConfig } from '../../../shared/security-groups.js';
import { buildFlows, countOurFlows, FLOW_COOKIE, flowPorts } from './flows.js';
import { CT_ZONE, GUARD_IPS, GUARD_MAC, SG_KEY_PREFIX } from './names.js';
import { allocateZone, validateOvsPort } from './ports.js';
import {
  CT_ZONE_MIN,
  groupCookie,
  portRangeMatches,
  ruleMatches,
  securityGroupFlows,
} from './security-group-flows.js';
import { validateSecurityGroup } from './security-group-state.js';

const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';
const web: SecurityGroupConfig = {
  name: 'web',
  rules: [
    { direction: 'ingress', protocol: 'tcp', ports: [{ from: 80, to: 80 }], group: 'client' },
    { direction: 'ingress', protocol: 'icmp', cidr: '10.0.0.0/24' },
  ],
  memberMacs: [A],
};
const client: SecurityGroupConfig = { name: 'client', rules: [], memberMacs: [B] };
const groups = new Map([
  ['web', web],
  ['client', client],
]);
const W = groupCookie('web');
const C = FLOW_COOKIE;

describe('security group flows (OVS)', () => {
  it('port ranges become the fewest aligned value/mask matches', () => {
    expect(portRangeMatches(80, 80)).toEqual(['80']);
    expect(portRangeMatches(1024, 2047)).toEqual(['0x400/0xfc00']);
    expect(portRangeMatches(8000, 8003)).toEqual(['0x1f40/0xfffc']);
    expect(portRangeMatches(7, 9)).toEqual(['7', '0x8/0xfffe']);
    expect(portRangeMatches(1, 65535)).toHaveLength(16);
    // Every port of a range is covered exactly once, none outside it.
    const covered = (from: number, to: number) => {
      const hit = new Set<number>();
      for (const m of portRangeMatches(from, to)) {
        const [v, mask] = m.includes('/') ? m.split('/').map(Number) : [Number(m), 0xffff];
        for (let p = 0; p <= 0xffff; p++)
          if ((p & mask!) === v) {
            expect(hit.has(p)).toBe(false);
            hit.add(p);
          }
      }
      return hit;
    };
    const h = covered(1000, 2000);
    expect(h.size).toBe(1001);
    expect(h.has(999) || h.has(2001)).toBe(false);
  });

  it('rule matches: protocol x ports x remote; a remote group by member MACs, an unknown one matches nothing', () => {
    expect(ruleMatches(web.rules[0]!, groups)).toEqual([`tcp,dl_src=${B},tp_dst=80`]);
    expect(ruleMatches(web.rules[1]!, groups)).toEqual(['icmp,nw_src=10.0.0.0/24']);
    expect(ruleMatches({ direction: 'egress', protocol: 'any', cidr: '0.0.0.0/0' }, groups)).toEqual(['ip']);
    expect(
      ruleMatches(
        { direction: 'egress', protocol: 'udp', ports: [{ from: 53, to: 53 }], group: 'web' },
        groups,
      ),
    ).toEqual([`udp,dl_dst=${A},tp_dst=53`]);
    expect(ruleMatches({ direction: 'ingress', protocol: 'tcp', group: 'nope' }, groups)).toEqual([]);
  });

  it('golden: one grouped port with ingress rules only (egress open, committed in its zone)', () => {
    expect(securityGroupFlows([{ ofport: 3, mac: A, zone: 16384, groups: ['web'] }], groups, C)).toEqual([
      `cookie=${C},table=10,priority=300,in_port=3,udp,tp_src=68,tp_dst=67,actions=resubmit(,20)`,
      `cookie=${C},table=10,priority=200,in_port=3,ip,actions=ct(table=11,zone=16384)`,
      `cookie=${C},table=10,priority=10,in_port=3,actions=resubmit(,20)`,
      `cookie=${C},table=11,priority=100,ct_state=+new+trk,in_port=3,ip,actions=ct(commit,zone=16384),resubmit(,20)`,
      `cookie=${C},table=11,priority=1,in_port=3,actions=drop`,
      `cookie=${C},table=21,priority=1,dl_dst=${A},actions=drop`,
      `cookie=${C},table=20,priority=300,dl_dst=${A},udp,tp_src=67,tp_dst=68,actions=NORMAL`,
      `cookie=${C},table=20,priority=200,dl_dst=${A},ip,actions=ct(table=21,zone=16384)`,
      `cookie=${C},table=20,priority=160,dl_dst=${A},icmp6,icmp_type=133,actions=NORMAL`,
      `cookie=${C},table=20,priority=160,dl_dst=${A},icmp6,icmp_type=134,actions=NORMAL`,
      `cookie=${C},table=20,priority=160,dl_dst=${A},icmp6,icmp_type=135,actions=NORMAL`,
      `cookie=${C},table=20,priority=160,dl_dst=${A},icmp6,icmp_type=136,actions=NORMAL`,
      `cookie=${C},table=20,priority=150,dl_dst=${A},ipv6,actions=drop`,
      `cookie=${C},table=11,priority=300,ct_state=+inv+trk,actions=drop`,
      `cookie=${C},table=11,priority=200,ct_state=-new+est+trk,actions=resubmit(,20)`,
      `cookie=${C},table=11,priority=200,ct_state=-new+rel+trk,actions=resubmit(,20)`,
      `cookie=${C},table=11,priority=0,actions=drop`,
      `cookie=${C},table=21,priority=300,ct_state=+inv+trk,actions=drop`,
      `cookie=${C},table=21,priority=200,ct_state=-new+est+trk,actions=NORMAL`,
      `cookie=${C},table=21,priority=200,ct_state=-new+rel+trk,actions=NORMAL`,
      `cookie=${C},table=21,priority=0,actions=drop`,
      `cookie=${C},table=10,priority=0,actions=drop`,
      `cookie=${C},table=20,priority=0,actions=NORMAL`,
      `cookie=${W},table=21,priority=100,ct_state=+new+trk,dl_dst=${A},tcp,dl_src=${B},tp_dst=80,actions=ct(commit,zone=16384),NORMAL`,
      `cookie=${W},table=21,priority=100,ct_state=+new+trk,dl_dst=${A},icmp,nw_src=10.0.0.0/24,actions=ct(commit,zone=16384),NORMAL`,
    ]);
  });

  it('egress rules close egress to them (and IPv6 to neighbour discovery); duplicates across groups appear once', () => {
    const out: SecurityGroupConfig = {
      name: 'out',
      rules: [{ direction: 'egress', protocol: 'tcp', ports: [{ from: 443, to: 443 }] }],
      memberMacs: [],
    };
    const same: SecurityGroupConfig = { ...out, name: 'same' };
    const g = new Map([
      ['out', out],
      ['same', same],
    ]);
    const flows = securityGroupFlows([{ ofport: 4, mac: A, zone: 16385, groups: ['out', 'same'] }], g, C);
    expect(flows).toContain(
      `cookie=${groupCookie('out')},table=11,priority=100,ct_state=+new+trk,in_port=4,tcp,tp_dst=443,actions=ct(commit,zone=16385),resubmit(,20)`,
    );
    expect(flows.filter((f) => f.includes('tp_dst=443'))).toHaveLength(1);
    expect(flows.some((f) => f.includes('ct_state=+new+trk,in_port=4,ip,'))).toBe(false);
    expect(flows).toContain(`cookie=${C},table=10,priority=150,in_port=4,ipv6,actions=drop`);
    expect(flows).toContain(
      `cookie=${C},table=10,priority=160,in_port=4,icmp6,icmp_type=135,actions=resubmit(,20)`,
    );
  });

  it('a port without a usable zone passes nothing', () => {
    const flows = securityGroupFlows([{ ofport: 5, mac: A, zone: -1, groups: ['web'] }], groups, C);
    expect(flows).toContain(`cookie=${C},table=20,priority=200,dl_dst=${A},actions=drop`);
    expect(flows.some((f) => f.includes('ct('))).toBe(false);
  });

  it('bridge table: grouped ports go to their egress table, other accepted frames to dispatch; no groups, no change', () => {
    const port = (name: string, ofport: number, ids: Record<string, string>, tag?: number): OvsPort => ({
      name,
      ofport,
      bridge: 'vlo-1',
      trunks: [],
      externalIds: ids,
      type: '',
      options: {},
      ...(tag !== undefined ? { tag } : {}),
    });
    const guarded = { [GUARD_MAC]: A, [GUARD_IPS]: '10.0.0.5' };
    const plain = flowPorts([port('vm-a', 2, guarded, 10), port('eth1', 1, {})], 'vlo-1');
    expect(
      buildFlows('vlan', plain, groups).some((f) => f.includes('resubmit') || f.includes('table=')),
    ).toBe(false);
    const ports = flowPorts(
      [
        port('vm-a', 2, { ...guarded, [`${SG_KEY_PREFIX}0`]: 'web', [CT_ZONE]: String(CT_ZONE_MIN) }, 10),
        port('vm-b', 3, {}, 10),
      ],
      'vlo-1',
    );
    expect(ports[0]!.groups).toEqual({ names: ['web'], zone: CT_ZONE_MIN });
    const flows = buildFlows('vlan', ports, groups);
    expect(flows).toContain(
      `cookie=${C},priority=400,in_port=2,dl_src=${A},vlan_tci=0x0000/0x1000,ip,nw_src=10.0.0.5,actions=resubmit(,10)`,
    );
    expect(flows).toContain(`cookie=${C},priority=200,in_port=3,actions=resubmit(,20)`);
    expect(flows).toContain(`cookie=${C},priority=200,in_port=2,actions=resubmit(,20)`);
    // Group cookies count as vmlink's (listNetworks compares the count).
    const dumped = flows.map((f) => f.replace(/cookie=0x0*/, 'cookie=0x'));
    expect(countOurFlows(dumped)).toBe(flows.length);
    expect(countOurFlows(['cookie=0x1234, priority=1 actions=drop'])).toBe(0);
  });

  it('conntrack zones: kept when the port has its own, else the lowest free one of the whole instance', () => {
    const p = (name: string, zone?: number): OvsPort => ({
      name,
      trunks: [],
      type: '',
      options: {},
      externalIds: zone === undefined ? {} : { [CT_ZONE]: String(zone) },
    });
    expect(allocateZone('a', [p('a')])).toBe(CT_ZONE_MIN);
    expect(allocateZone('a', [p('a', CT_ZONE_MIN + 5)])).toBe(CT_ZONE_MIN + 5);
    expect(allocateZone('c', [p('a', CT_ZONE_MIN), p('b', CT_ZONE_MIN + 1)])).toBe(CT_ZONE_MIN + 2);
    // A zone outside the range (hand-edited) is replaced.
    expect(allocateZone('a', [p('a', 7)])).toBe(CT_ZONE_MIN);
  });

  it('refuses groups and ports the flows could not express safely, naming them', () => {
    expect(() => validateSecurityGroup(web)).not.toThrow();
    expect(() => validateSecurityGroup({ ...web, name: 'Web,actions=NORMAL' })).toThrow(/security group/);
    expect(() => validateSecurityGroup({ ...web, memberMacs: ['52:54:00:00:00:0a,ip'] })).toThrow(
      /memberMacs/,
    );
    expect(() =>
      validateSecurityGroup({
        ...web,
        rules: [{ direction: 'ingress', protocol: 'tcp', cidr: '10.0.0.0/33' }],
      }),
    ).toThrow(/cidr/);
    expect(() =>
      validateSecurityGroup({
        ...web,
        rules: [{ direction: 'ingress', protocol: 'icmp', ports: [{ from: 1, to: 2 }] }],
      }),
    ).toThrow(/ports need tcp or udp/);
    expect(() =>
      validateSecurityGroup({
        ...web,
        rules: [{ direction: 'ingress', protocol: 'tcp', ports: [{ from: 9, to: 8 }] }],
      }),
    ).toThrow(/low end first/);
    const port = { tap: 'vm-a', bridge: 'vlo-1', mtu: 1500, vlan: 10 };
    expect(() => validateOvsPort({ ...port, securityGroups: ['web'] })).toThrow(/need port security/);
    expect(() =>
      validateOvsPort({
        ...port,
        security: { mac: A, addresses: [] },
        securityGroups: ['web', 'web'],
      }),
    ).toThrow(/distinct/);
    expect(() =>
      validateOvsPort({ ...port, security: { mac: A, addresses: [] }, securityGroups: ['a b'] }),
    ).toThrow(/invalid security group name/);
  });
});
