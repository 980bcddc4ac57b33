import { describe, expect, it } from 'vitest';
import type { OvsPort } from '../../../exec/ovs.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { buildFlows, countOurFlows, FLOW_COOKIE, flowPorts, reservationsOn } from './flows.js';

const port = (p: Partial<OvsPort> & { name: string }): OvsPort => ({
  trunks: [],
  externalIds: {},
  type: '',
  options: {},
  bridge: 'vlo-1',
  ...p,
});

describe('OVS flow tables', () => {
  it('vlan bridge: access ports drop tagged frames, trunks carry only their VLANs, default drop', () => {
    const ports = flowPorts(
      [
        port({ name: 'eth1', ofport: 1, trunks: [200, 100] }),
        port({ name: 'vlt-a', ofport: 2, tag: 100 }),
        port({ name: 'vlt-b', ofport: -1, tag: 100 }),
        port({ name: 'vlo-1', ofport: 65534 }),
        port({ name: 'other', ofport: 5, bridge: 'vlo-2', tag: 7 }),
      ],
      'vlo-1',
    );
    expect(buildFlows('vlan', ports)).toEqual([
      `cookie=${FLOW_COOKIE},priority=200,in_port=1,dl_vlan=100,actions=NORMAL`,
      `cookie=${FLOW_COOKIE},priority=200,in_port=1,dl_vlan=200,actions=NORMAL`,
      `cookie=${FLOW_COOKIE},priority=100,in_port=1,actions=drop`,
      `cookie=${FLOW_COOKIE},priority=300,in_port=2,vlan_tci=0x1000/0x1000,actions=drop`,
      `cookie=${FLOW_COOKIE},priority=200,in_port=2,actions=NORMAL`,
      `cookie=${FLOW_COOKIE},priority=0,actions=drop`,
    ]);
  });

  it('overlay bridge: NORMAL, tagged frames from VM ports drop, tunnels exempt', () => {
    const ports = flowPorts(
      [port({ name: 'vx', ofport: 1, type: 'vxlan' }), port({ name: 'vlt-a', ofport: 2 })],
      'vlo-1',
    );
    expect(buildFlows('overlay', ports)).toEqual([
      `cookie=${FLOW_COOKIE},priority=300,in_port=2,vlan_tci=0x1000/0x1000,actions=drop`,
      `cookie=${FLOW_COOKIE},priority=0,actions=NORMAL`,
    ]);
  });

  it('counts vmlink flows in a dump', () => {
    expect(
      countOurFlows([
        `cookie=${FLOW_COOKIE}, priority=0 actions=drop`,
        'cookie=0x0, priority=0 actions=NORMAL',
      ]),
    ).toBe(1);
  });
});

describe('OVS port guards (anti-spoofing)', () => {
  const guarded = (extra: Record<string, string>) =>
    port({
      name: 'vlt-g',
      ofport: 4,
      tag: 300,
      externalIds: { 'vmlink-guard-mac': '52:54:00:aa:bb:cc', ...extra },
    });
  const c = `cookie=${FLOW_COOKIE}`;

  it('a guarded port lets out only its MAC, its fixed and allowed addresses, no servers; the rest is a counted drop', () => {
    const flows = buildFlows(
      'vlan',
      flowPorts([guarded({ 'vmlink-guard-ips': '10.30.0.20_10.30.0.50' })], 'vlo-1'),
    );
    const from = 'in_port=4,dl_src=52:54:00:aa:bb:cc,vlan_tci=0x0000/0x1000';
    expect(flows).toEqual([
      `${c},priority=450,in_port=4,udp,tp_src=67,actions=drop`,
      `${c},priority=450,in_port=4,udp6,tp_src=547,actions=drop`,
      `${c},priority=450,in_port=4,icmp6,icmp_type=134,actions=drop`,
      `${c},priority=400,${from},arp,arp_spa=0.0.0.0,arp_sha=52:54:00:aa:bb:cc,actions=NORMAL`,
      `${c},priority=400,${from},arp,arp_spa=10.30.0.20,arp_sha=52:54:00:aa:bb:cc,actions=NORMAL`,
      `${c},priority=400,${from},arp,arp_spa=10.30.0.50,arp_sha=52:54:00:aa:bb:cc,actions=NORMAL`,
      `${c},priority=400,${from},ip,nw_src=10.30.0.20,actions=NORMAL`,
      `${c},priority=400,${from},ip,nw_src=10.30.0.50,actions=NORMAL`,
      `${c},priority=400,${from},udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,tp_src=68,tp_dst=67,actions=NORMAL`,
      `${c},priority=400,${from},ipv6,ipv6_src=::,actions=NORMAL`,
      `${c},priority=400,${from},ipv6,ipv6_src=fe80::/10,actions=NORMAL`,
      `${c},priority=400,${from},dl_type=0x8035,actions=NORMAL`,
      `${c},priority=250,in_port=4,actions=drop`,
      `${c},priority=300,in_port=4,vlan_tci=0x1000/0x1000,actions=drop`,
      `${c},priority=200,in_port=4,actions=NORMAL`,
      `${c},priority=0,actions=drop`,
    ]);
  });

  it('a DHCP NIC is pinned to its reservation here, else to its MAC only (yiaddr cannot be read by OpenFlow)', () => {
    const dhcp = guarded({ 'vmlink-guard-dhcp': '1' });
    const reserved = new Map([['52:54:00:aa:bb:cc', ['10.30.0.7']]]);
    expect(flowPorts([dhcp], 'vlo-1', reserved)[0]?.guard).toEqual({
      mac: '52:54:00:aa:bb:cc',
      addresses: ['10.30.0.7'],
    });
    const unpinned = buildFlows('overlay', flowPorts([dhcp], 'vlo-1'));
    expect(unpinned).toContain(
      `${c},priority=400,in_port=4,dl_src=52:54:00:aa:bb:cc,vlan_tci=0x0000/0x1000,ip,actions=NORMAL`,
    );
    expect(unpinned.filter((f) => f.includes('nw_src=10.'))).toEqual([]);
    // A NIC with a fixed address ignores a reservation of its MAC.
    const fixed = guarded({ 'vmlink-guard-ips': '10.30.0.20' });
    expect(flowPorts([fixed], 'vlo-1', reserved)[0]?.guard?.addresses).toEqual(['10.30.0.20']);
  });

  it('unguarded ports (trunks, portSecurity: false) get no guard; a corrupt MAC sends nothing', () => {
    expect(flowPorts([port({ name: 'vlt-u', ofport: 2, tag: 100 })], 'vlo-1')[0]?.guard).toBeUndefined();
    const bad = buildFlows(
      'overlay',
      flowPorts([guarded({ 'vmlink-guard-mac': 'eth0,actions=NORMAL' })], 'vlo-1'),
    );
    expect(bad.filter((f) => f.includes('in_port=4'))).toEqual([
      `${c},priority=250,in_port=4,actions=drop`,
      `${c},priority=300,in_port=4,vlan_tci=0x1000/0x1000,actions=drop`,
    ]);
  });

  it("reservations come from this host's networks on the bridge", () => {
    const sub = (mac: string, ip: string) => ({
      cidr: '10.30.0.0/24',
      gateway: '10.30.0.1',
      prefixLength: 24,
      dhcpStart: '10.30.0.100',
      dhcpEnd: '10.30.0.150',
      reservations: [{ mac, ip, hostname: 'g' }],
    });
    const net = (name: string, bridge: string, mac: string, ip: string): NetworkConfig => ({
      name,
      mode: 'vlan',
      backend: 'ovs',
      bridge,
      mtu: 1500,
      forwards: [],
      subnet: sub(mac, ip),
    });
    expect([
      ...reservationsOn('vlo-1', [net('a', 'vlo-1', 'm1', '10.30.0.7'), net('b', 'vlo-2', 'm2', '10.0.0.2')]),
    ]).toEqual([['m1', ['10.30.0.7']]]);
  });
});
