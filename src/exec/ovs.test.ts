import { describe, expect, it } from 'vitest';
import { asOptInt, asSet, cleanFlowLine, Ovs, parseFlowDump, parseVsctlJson, vsctlCmd } from './ovs.js';
import { RecordingRunner } from './runner.js';

const endpoints = {
  dbSocket: '/s/ovs/run/db.sock',
  runDir: '/s/ovs/run',
  vswitchdCtl: '/s/ovs/run/ovs-vswitchd.ctl',
};

describe('ovs-vsctl wrapper', () => {
  it('runs several commands as one transaction with explicit sockets', async () => {
    const r = new RecordingRunner();
    const ovs = new Ovs(r, endpoints, 'ns1');
    await ovs.vsctl([
      ...vsctlCmd.addBr('vlo-1', { datapathType: 'netdev', externalIds: { 'vmlink-role': 'vlan' } }),
      ...vsctlCmd.addPort('vlo-1', 'eth1', { vlanMode: 'trunk', trunks: [200, 100] }),
      ...vsctlCmd.addPort('vlo-1', 'vlt-a', { tag: 100 }),
      ...vsctlCmd.addPort('vlx-1', 'vx-1', {
        type: 'vxlan',
        options: { remote_ip: '10.0.0.2', key: '1001' },
        protected: true,
      }),
    ]);
    expect(r.lines()).toEqual([
      '[ns1] ovs-vsctl --db=unix:/s/ovs/run/db.sock --timeout=20 -- --may-exist add-br vlo-1 -- set Bridge vlo-1 datapath_type=netdev external_ids:vmlink-role=vlan -- --may-exist add-port vlo-1 eth1 -- set Port eth1 trunks=100,200 vlan_mode=trunk -- --may-exist add-port vlo-1 vlt-a -- set Port vlt-a tag=100 -- --may-exist add-port vlx-1 vx-1 -- set Port vx-1 protected=true -- set Interface vx-1 type=vxlan options:remote_ip=10.0.0.2 options:key=1001',
    ]);
  });

  it('refuses names and values that could smuggle arguments', () => {
    expect(() => vsctlCmd.addBr('a b')).toThrow(/invalid bridge/);
    expect(() => vsctlCmd.addPort('br', 'p', { tag: 5000 })).toThrow(/out of range/);
    expect(() => vsctlCmd.addPort('br', 'p', { options: { remote_ip: '1.2.3.4 -- del-br x' } })).toThrow(
      /invalid options/,
    );
    expect(() => vsctlCmd.addPort('br', 'p', { type: 'vx lan' })).toThrow(/invalid interface type/);
  });

  it('parses --format=json rows: uuids, one-element sets, maps, empty sets', () => {
    const rows = parseVsctlJson(
      '{"data":[[["uuid","u1"],"vm",5,["set",[1,2]],["map",[["k","v"]]],["uuid","i1"]],[["uuid","u2"],"eth0",["set",[]],["set",[]],["map",[]],["set",[["uuid","a"],["uuid","b"]]]]],"headings":["_uuid","name","tag","trunks","external_ids","interfaces"]}',
    );
    expect(rows[0]).toEqual({
      _uuid: 'u1',
      name: 'vm',
      tag: 5,
      trunks: [1, 2],
      external_ids: { k: 'v' },
      interfaces: 'i1',
    });
    expect(asSet(rows[0]!.interfaces)).toEqual(['i1']);
    expect(asSet(rows[1]!.interfaces)).toEqual(['a', 'b']);
    expect(asOptInt(rows[1]!.tag)).toBeUndefined();
    expect(asOptInt(rows[0]!.tag)).toBe(5);
    expect(parseVsctlJson('')).toEqual([]);
  });

  it('joins ports, interfaces and bridges', async () => {
    const r = new RecordingRunner()
      .on(
        [
          'ovs-vsctl',
          `--db=unix:${endpoints.dbSocket}`,
          '--timeout=20',
          '--no-wait',
          '--format=json',
          '--',
          '--columns=_uuid,name,ports',
          'list',
          'Bridge',
        ],
        {
          stdout:
            '{"data":[[["uuid","b1"],"vlo-1",["set",[["uuid","p1"],["uuid","p2"]]]]],"headings":["_uuid","name","ports"]}',
        },
      )
      .on(
        [
          'ovs-vsctl',
          `--db=unix:${endpoints.dbSocket}`,
          '--timeout=20',
          '--no-wait',
          '--format=json',
          '--',
          '--columns=_uuid,name,tag,trunks,vlan_mode,interfaces,external_ids',
          'list',
          'Port',
        ],
        {
          stdout:
            '{"data":[[["uuid","p1"],"vlt-a",100,["set",[]],"access",["uuid","i1"],["map",[]]],[["uuid","p2"],"eth1",["set",[]],["set",[100,200]],"trunk",["uuid","i2"],["map",[]]]],"headings":["_uuid","name","tag","trunks","vlan_mode","interfaces","external_ids"]}',
        },
      )
      .on(
        [
          'ovs-vsctl',
          `--db=unix:${endpoints.dbSocket}`,
          '--timeout=20',
          '--no-wait',
          '--format=json',
          '--',
          '--columns=_uuid,name,type,options,ofport,error,link_state',
          'list',
          'Interface',
        ],
        {
          stdout:
            '{"data":[[["uuid","i1"],"vlt-a","",["map",[]],3,["set",[]],"up"],[["uuid","i2"],"eth1","",["map",[]],1,"could not open",["set",[]]]],"headings":["_uuid","name","type","options","ofport","error","link_state"]}',
        },
      );
    const ports = await new Ovs(r, endpoints).ports();
    expect(ports).toEqual([
      {
        name: 'vlt-a',
        bridge: 'vlo-1',
        tag: 100,
        trunks: [],
        vlanMode: 'access',
        externalIds: {},
        type: '',
        options: {},
        ofport: 3,
        linkState: 'up',
      },
      {
        name: 'eth1',
        bridge: 'vlo-1',
        trunks: [100, 200],
        vlanMode: 'trunk',
        externalIds: {},
        type: '',
        options: {},
        ofport: 1,
        error: 'could not open',
      },
    ]);
  });

  it('replaces and dumps flows through the bridge management socket of this instance', async () => {
    const r = new RecordingRunner();
    const ovs = new Ovs(r, endpoints);
    await ovs.replaceFlows('vlo-1', ['priority=0,actions=drop']);
    await ovs.dumpFlows('vlo-1', { names: true });
    expect(r.lines()).toEqual([
      'ovs-ofctl replace-flows unix:/s/ovs/run/vlo-1.mgmt -',
      'ovs-ofctl dump-flows --names unix:/s/ovs/run/vlo-1.mgmt',
    ]);
    expect(r.calls[0]!.input).toBe('priority=0,actions=drop\n');
    await expect(ovs.replaceFlows('vlo-1', ['a\nb'])).rejects.toThrow(/invalid flow/);
  });

  it('cleans dump-flows output', () => {
    const dump =
      'NXST_FLOW reply (xid=0x4):\n cookie=0x766c6e6b, duration=2.5s, table=0, n_packets=3, n_bytes=180, idle_age=1, priority=300,vlan_tci=0x1000/0x1000,in_port=vlt-a actions=drop\n';
    expect(parseFlowDump(dump)).toEqual([
      'cookie=0x766c6e6b, table=0, priority=300,vlan_tci=0x1000/0x1000,in_port=vlt-a actions=drop',
    ]);
    expect(
      cleanFlowLine(
        ' cookie=0x1, duration=1s, table=0, n_packets=3, n_bytes=180, priority=0 actions=NORMAL',
        true,
      ),
    ).toBe('cookie=0x1, table=0, n_packets=3, n_bytes=180, priority=0 actions=NORMAL');
  });
});
