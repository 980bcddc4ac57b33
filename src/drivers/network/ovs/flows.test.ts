import { describe, expect, it } from 'vitest';
import type { OvsPort } from '../../../exec/ovs.js';
import { buildFlows, countOurFlows, FLOW_COOKIE, flowPorts } from './flows.js';

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
