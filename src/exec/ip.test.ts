import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../shared/errors.js';
import { Bridge, bridgeCmd, parseFdb } from './bridge.js';
import { Ip, ipCmd, renderBatch } from './ip.js';
import {
  parseAddrs,
  parseLinks,
  parseNetnsList,
  parseNetnsPids,
  parseRoutes,
  routeSpecOf,
} from './ip-parse.js';
import { RecordingRunner } from './runner.js';

describe('ipCmd', () => {
  it('builds link add for each kind', () => {
    expect(ipCmd.linkAdd({ name: 'vlb-1', kind: 'bridge' })).toEqual([
      'link',
      'add',
      'name',
      'vlb-1',
      'type',
      'bridge',
    ]);
    expect(ipCmd.linkAdd({ name: 'br0', kind: 'bridge', mtu: 9000, vlanFiltering: true })).toEqual([
      'link',
      'add',
      'name',
      'br0',
      'mtu',
      '9000',
      'type',
      'bridge',
      'vlan_filtering',
      '1',
    ]);
    expect(ipCmd.linkAdd({ name: 'a', kind: 'veth', peer: 'b', peerNetns: 'vm' })).toEqual([
      'link',
      'add',
      'name',
      'a',
      'type',
      'veth',
      'peer',
      'name',
      'b',
      'netns',
      'vm',
    ]);
    expect(ipCmd.linkAdd({ name: 'v10', kind: 'vlan', link: 'eth0', vlanId: 10 })).toEqual([
      'link',
      'add',
      'link',
      'eth0',
      'name',
      'v10',
      'type',
      'vlan',
      'id',
      '10',
    ]);
    expect(ipCmd.linkAdd({ name: 'x', kind: 'vxlan', vni: 7, remote: '192.0.2.1', link: 'eth0' })).toEqual([
      'link',
      'add',
      'name',
      'x',
      'type',
      'vxlan',
      'id',
      '7',
      'dstport',
      '4789',
      'remote',
      '192.0.2.1',
      'dev',
      'eth0',
    ]);
    expect(ipCmd.linkAdd({ name: 'm', kind: 'macvlan', link: 'eth0' })).toEqual([
      'link',
      'add',
      'link',
      'eth0',
      'name',
      'm',
      'type',
      'macvlan',
      'mode',
      'bridge',
    ]);
  });

  it('refuses bad names and vlan ids before running anything', () => {
    expect(() => ipCmd.linkAdd({ name: 'way-too-long-name0', kind: 'bridge' })).toThrow(InvalidRequestError);
    expect(() => ipCmd.linkAdd({ name: 'a;rm -rf', kind: 'bridge' })).toThrow(InvalidRequestError);
    expect(() => ipCmd.linkDel('a b')).toThrow(InvalidRequestError);
    expect(() => ipCmd.linkAdd({ name: 'v', kind: 'vlan', link: 'eth0', vlanId: 4095 })).toThrow(/1-4094/);
    expect(() => ipCmd.addrAdd('eth0', '10.0.0.1/24\nlink del eth0')).toThrow(InvalidRequestError);
    expect(() => ipCmd.linkSet('eth0', { alias: 'x"y' })).toThrow(InvalidRequestError);
  });

  it('builds link set, addr, route and tuntap commands', () => {
    expect(ipCmd.linkSet('t0', { master: 'br0', mtu: 1400, alias: 'vmlink:net:a b', up: true })).toEqual([
      'link',
      'set',
      'dev',
      't0',
      'master',
      'br0',
      'mtu',
      '1400',
      'alias',
      'vmlink:net:a b',
      'up',
    ]);
    expect(ipCmd.linkSet('t0', { master: null })).toEqual(['link', 'set', 'dev', 't0', 'nomaster']);
    expect(ipCmd.addrAdd('br0', '10.0.0.1/24')).toEqual([
      'addr',
      'add',
      '10.0.0.1/24',
      'broadcast',
      '+',
      'dev',
      'br0',
    ]);
    expect(
      ipCmd.routeReplace({
        dst: 'default',
        gateway: '192.168.1.1',
        dev: 'br0',
        metric: 100,
        protocol: 'dhcp',
      }),
    ).toEqual([
      'route',
      'replace',
      'default',
      'via',
      '192.168.1.1',
      'dev',
      'br0',
      'proto',
      'dhcp',
      'metric',
      '100',
    ]);
    expect(ipCmd.tuntapAdd({ name: 'vlt-1', mode: 'tap', vnetHdr: true })).toEqual([
      'tuntap',
      'add',
      'dev',
      'vlt-1',
      'mode',
      'tap',
      'vnet_hdr',
    ]);
  });

  it('renders batches, quoting arguments with spaces', () => {
    expect(
      renderBatch([
        ipCmd.linkAdd({ name: 'b', kind: 'bridge' }),
        ipCmd.linkSet('b', { alias: 'a b', up: true }),
      ]),
    ).toBe('link add name b type bridge\nlink set dev b alias "a b" up\n');
    expect(() => renderBatch([['link', 'del', 'x\nlink del eth0']])).toThrow(InvalidRequestError);
  });
});

describe('ip -json parsers', () => {
  it('parses links with details', () => {
    const text = JSON.stringify([
      {
        ifindex: 2,
        ifname: 'vlb-1',
        flags: ['BROADCAST', 'UP'],
        mtu: 1500,
        operstate: 'UP',
        address: 'aa:bb:cc:dd:ee:ff',
        ifalias: 'vmlink:net:a',
        linkinfo: { info_kind: 'bridge' },
      },
      {
        ifindex: 3,
        ifname: 'vlt-1',
        flags: ['BROADCAST'],
        mtu: 1400,
        operstate: 'DOWN',
        master: 'vlb-1',
        linkinfo: { info_kind: 'tun', info_data: { type: 'tap' }, info_slave_kind: 'bridge' },
      },
      { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP'], mtu: 65536, operstate: 'UNKNOWN' },
    ]);
    expect(parseLinks(text)).toEqual([
      {
        name: 'vlb-1',
        index: 2,
        kind: 'bridge',
        alias: 'vmlink:net:a',
        mtu: 1500,
        up: true,
        operstate: 'UP',
        address: 'aa:bb:cc:dd:ee:ff',
      },
      {
        name: 'vlt-1',
        index: 3,
        kind: 'tun',
        tunType: 'tap',
        master: 'vlb-1',
        mtu: 1400,
        up: false,
        operstate: 'DOWN',
      },
      { name: 'lo', index: 1, mtu: 65536, up: true, operstate: 'UNKNOWN' },
    ]);
    expect(parseLinks('')).toEqual([]);
  });

  it('parses addresses and routes', () => {
    const addrs = JSON.stringify([
      {
        ifname: 'eth0',
        addr_info: [
          {
            family: 'inet',
            local: '192.168.77.1',
            prefixlen: 24,
            scope: 'global',
            broadcast: '192.168.77.255',
          },
          { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
        ],
      },
    ]);
    expect(parseAddrs(addrs)).toEqual([
      {
        dev: 'eth0',
        family: 'inet',
        local: '192.168.77.1',
        prefixLen: 24,
        scope: 'global',
        broadcast: '192.168.77.255',
      },
      { dev: 'eth0', family: 'inet6', local: 'fe80::1', prefixLen: 64, scope: 'link' },
    ]);
    const routes = JSON.stringify([
      { dst: 'default', gateway: '192.168.77.254', metric: 50, flags: [] },
      {
        dst: '192.168.77.0/24',
        protocol: 'kernel',
        scope: 'link',
        prefsrc: '192.168.77.1',
        flags: ['linkdown'],
      },
    ]);
    const parsed = parseRoutes(routes, 'eth0');
    expect(parsed).toEqual([
      { dst: 'default', gateway: '192.168.77.254', metric: 50, dev: 'eth0', flags: [] },
      {
        dst: '192.168.77.0/24',
        protocol: 'kernel',
        scope: 'link',
        prefsrc: '192.168.77.1',
        dev: 'eth0',
        flags: ['linkdown'],
      },
    ]);
    expect(routeSpecOf(parsed[0]!, 'br0')).toEqual({
      dst: 'default',
      gateway: '192.168.77.254',
      metric: 50,
      dev: 'br0',
    });
  });
});

describe('Ip', () => {
  it('runs through the runner in its namespace, batches on stdin', async () => {
    const runner = new RecordingRunner().on(['ip', '-json', '-details', 'link', 'show', 'dev', 'nope'], {
      code: 1,
      stderr: 'Device "nope" does not exist.',
    });
    const ip = new Ip(runner, 'lab1');
    expect(await ip.link.get('nope')).toBeUndefined();
    await ip.batch([ipCmd.linkDel('a'), ipCmd.linkDel('b')]);
    await ip.batch([]);
    await ip.tuntap.add({ name: 't0', mode: 'tap', vnetHdr: true });
    expect(runner.calls).toEqual([
      { argv: ['ip', '-json', '-details', 'link', 'show', 'dev', 'nope'], netns: 'lab1' },
      { argv: ['ip', '-batch', '-'], netns: 'lab1', input: 'link del dev a\nlink del dev b\n' },
      { argv: ['ip', 'tuntap', 'add', 'dev', 't0', 'mode', 'tap', 'vnet_hdr'], netns: 'lab1' },
    ]);
  });

  it("lists namespaces and their processes, from the caller's own namespace", async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', 'netns', 'list'], { stdout: '[{"name":"vl-a--sw","id":3},{"name":"vl-a-h1"}]\n' })
      .on(['ip', 'netns', 'pids', 'vl-a-h1'], { stdout: '412\n9001\n' })
      .on(['ip', 'netns', 'pids', 'gone'], { code: 1, stderr: 'Cannot open network namespace' });
    const ip = new Ip(runner, 'lab1');
    expect(await ip.namespaces.list()).toEqual(['vl-a--sw', 'vl-a-h1']);
    expect(await ip.namespaces.pids('vl-a-h1')).toEqual([412, 9001]);
    expect(await ip.namespaces.pids('gone')).toEqual([]);
    expect(runner.calls.every((c) => c.netns === undefined)).toBe(true);
    await expect(ip.namespaces.pids('../x')).rejects.toThrow(/invalid namespace name/);
    expect(parseNetnsList('')).toEqual([]);
    expect(parseNetnsPids(' 1\n\n22 \n')).toEqual([1, 22]);
  });

  it('throws on unexpected errors from link show', async () => {
    const runner = new RecordingRunner().on(['ip'], {
      code: 255,
      stderr: 'RTNETLINK: Operation not permitted',
    });
    await expect(new Ip(runner).link.get('x')).rejects.toThrow(/Operation not permitted/);
  });
});

describe('vxlan, vlan and bridge tool commands', () => {
  it('builds a nolearning vxlan device bound to its underlay, and 802.1Q devices', () => {
    expect(
      ipCmd
        .linkAdd({
          name: 'vlx-1',
          kind: 'vxlan',
          mtu: 1450,
          vni: 1001,
          dstport: 4789,
          local: '192.168.50.1',
          link: 'eth0',
          learning: false,
        })
        .join(' '),
    ).toBe(
      'link add name vlx-1 mtu 1450 type vxlan id 1001 dstport 4789 local 192.168.50.1 dev eth0 nolearning',
    );
    expect(ipCmd.linkAdd({ name: 'eth1.100', kind: 'vlan', link: 'eth1', vlanId: 100 }).join(' ')).toBe(
      'link add link eth1 name eth1.100 type vlan id 100',
    );
    expect(ipCmd.bridgeVlanFiltering('vlb-1', true).join(' ')).toBe(
      'link set dev vlb-1 type bridge vlan_filtering 1',
    );
  });

  it('builds fdb and vlan commands, refusing bad values', () => {
    expect(bridgeCmd.fdbAppend('vlx-1', '192.168.50.2').join(' ')).toBe(
      'fdb append 00:00:00:00:00:00 dev vlx-1 dst 192.168.50.2',
    );
    expect(bridgeCmd.fdbDel('vlx-1', '192.168.50.3').join(' ')).toBe(
      'fdb del 00:00:00:00:00:00 dev vlx-1 dst 192.168.50.3',
    );
    expect(bridgeCmd.vlanAdd('vlt-1', 100, { pvid: true, untagged: true }).join(' ')).toBe(
      'vlan add dev vlt-1 vid 100 pvid untagged',
    );
    expect(bridgeCmd.vlanAdd('vlt-1', 200).join(' ')).toBe('vlan add dev vlt-1 vid 200');
    expect(bridgeCmd.vlanDel('vlt-1', 1).join(' ')).toBe('vlan del dev vlt-1 vid 1');
    expect(() => bridgeCmd.fdbAppend('vlx-1', '1.2.3.4 self')).toThrow(InvalidRequestError);
    expect(() => bridgeCmd.fdbAppend('vlx-1', '1.2.3.4', 'zz')).toThrow(InvalidRequestError);
    expect(() => bridgeCmd.vlanAdd('vlt-1', 4095)).toThrow(/1-4094/);
    // A migrated guest's MAC claimed for its tap: lower-cased, like a learned entry (dynamic), on the bridge (master).
    expect(bridgeCmd.fdbClaim('vlt-web1-0', '52:54:00:AA:BB:01').join(' ')).toBe(
      'fdb replace 52:54:00:aa:bb:01 dev vlt-web1-0 master dynamic',
    );
    expect(() => bridgeCmd.fdbClaim('vlt-web1-0', '52:54:00:aa:bb:01 self')).toThrow(InvalidRequestError);
    expect(() => bridgeCmd.fdbClaim('tap 0', '52:54:00:aa:bb:01')).toThrow(InvalidRequestError);
  });

  it('parses vxlan, vlan and bridge details and fdb entries', () => {
    const [vx, vl, br] = parseLinks(
      JSON.stringify([
        {
          ifindex: 5,
          ifname: 'vlx-1',
          flags: ['UP'],
          mtu: 1450,
          operstate: 'UNKNOWN',
          master: 'vlb-1',
          linkinfo: {
            info_kind: 'vxlan',
            info_data: { id: 1001, local: '192.168.50.1', link: 'eth0', port: 4789, learning: false },
          },
        },
        {
          ifindex: 6,
          ifname: 'eth1.100',
          link: 'eth1',
          flags: [],
          mtu: 1500,
          operstate: 'DOWN',
          linkinfo: { info_kind: 'vlan', info_data: { protocol: '802.1Q', id: 100 } },
        },
        {
          ifindex: 7,
          ifname: 'vlb-2',
          flags: [],
          mtu: 1500,
          operstate: 'DOWN',
          linkinfo: { info_kind: 'bridge', info_data: { vlan_filtering: 1 } },
        },
      ]),
    );
    expect(vx?.vxlan).toEqual({ vni: 1001, local: '192.168.50.1', port: 4789, dev: 'eth0', learning: false });
    expect(vl).toMatchObject({ kind: 'vlan', vlanId: 100, link: 'eth1' });
    expect(br?.vlanFiltering).toBe(true);
    expect(
      parseFdb(
        '[{"mac":"16:69:84:6a:94:4d","flags":[],"master":"vlb-1","state":"permanent"},{"mac":"00:00:00:00:00:00","dst":"192.168.50.2","flags":["self"],"state":"permanent"}]',
      ),
    ).toEqual([
      { mac: '16:69:84:6a:94:4d', flags: [], master: 'vlb-1', state: 'permanent' },
      { mac: '00:00:00:00:00:00', dst: '192.168.50.2', flags: ['self'], state: 'permanent' },
    ]);
  });

  it('runs bridge commands in its namespace, batches on stdin', async () => {
    const runner = new RecordingRunner().on(['bridge', '-json', 'fdb'], { stdout: '[]' });
    const b = new Bridge(runner, 'lab1');
    expect(await b.fdb('vlx-1')).toEqual([]);
    await b.batch([bridgeCmd.fdbAppend('vlx-1', '10.0.0.2')]);
    await b.batch([]);
    expect(runner.calls).toEqual([
      { argv: ['bridge', '-json', 'fdb', 'show', 'dev', 'vlx-1'], netns: 'lab1' },
      {
        argv: ['bridge', '-batch', '-'],
        netns: 'lab1',
        input: 'fdb append 00:00:00:00:00:00 dev vlx-1 dst 10.0.0.2\n',
      },
    ]);
  });
});
