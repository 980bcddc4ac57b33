import { describe, expect, it } from 'vitest';
import { InvalidSpecError, type SpecIssue } from '../shared/errors.js';
import { checkHostSupport } from './admission.js';
import { loadSpec } from './load.js';
import { derivedMac } from './net.js';

// biome-ignore lint/suspicious/noExplicitAny: test fixtures are raw spec documents mutated freely.
type Raw = any;

function base(): Raw {
  return {
    version: 1,
    hosts: [{ name: 'host1' }, { name: 'host2', uplink: 'eth1' }],
    networks: [
      {
        name: 'natnet',
        host: 'host1',
        mode: 'nat',
        cidr: '10.10.0.0/24',
        forwards: [{ hostPort: 8080, vm: 'web1', vmPort: 80 }],
      },
      {
        name: 'iso',
        host: 'host1',
        mode: 'isolated',
        cidr: '10.20.0.0/24',
        gateway: '10.20.0.254',
        dhcp: { start: '10.20.0.50', end: '10.20.0.60' },
      },
      { name: 'lan', host: 'host1', mode: 'bridge' },
      { name: 'nat2', host: 'host2', mode: 'nat', cidr: '10.30.0.0/24' },
    ],
    vms: [
      {
        name: 'web1',
        host: 'host1',
        nics: [
          { network: 'natnet', ip: '10.10.0.10' },
          { network: 'lan', ip: '192.168.1.50' },
        ],
      },
      {
        name: 'db1',
        host: 'host1',
        disks: [{ name: 'data', sizeMiB: 100 }],
        nics: [{ network: 'iso', ip: '10.20.0.5' }],
      },
      { name: 'app1', host: 'host2', nics: [{ network: 'nat2', mac: '52:54:00:aa:bb:cc' }] },
    ],
  };
}

function withLab(s: Raw): Raw {
  s.lab = {
    name: 'demo',
    lan: {
      cidr: '192.168.1.0/24',
      gateway: '192.168.1.1',
      dhcp: { start: '192.168.1.200', end: '192.168.1.250' },
    },
    upstream: { cidr: '203.0.113.0/24', address: '203.0.113.1' },
    hosts: [
      { name: 'host1', address: '192.168.1.10' },
      { name: 'host2', address: '192.168.1.11' },
    ],
    peers: [{ name: 'nas', address: '192.168.1.20' }],
  };
  return s;
}

function issuesOf(mutate: (s: Raw) => void, lab = false): SpecIssue[] {
  const s = lab ? withLab(base()) : base();
  mutate(s);
  try {
    loadSpec(JSON.stringify(s));
  } catch (e) {
    if (e instanceof InvalidSpecError) return e.issues;
    throw e;
  }
  return [];
}

function expectIssue(issues: SpecIssue[], path: string, fragment: string) {
  expect(issues, JSON.stringify(issues, null, 1)).toContainEqual({
    path,
    message: expect.stringContaining(fragment),
  });
}

describe('validateSpec', () => {
  it('accepts the base spec, with and without a lab', () => {
    expect(issuesOf(() => {})).toEqual([]);
    expect(issuesOf(() => {}, true)).toEqual([]);
  });

  describe('duplicate names', () => {
    it('hosts', () =>
      expectIssue(
        issuesOf((s) => s.hosts.push({ name: 'host1' })),
        'hosts[2].name',
        'duplicate host name "host1"',
      ));
    it('networks', () =>
      expectIssue(
        issuesOf((s) =>
          s.networks.push({ name: 'iso', host: 'host2', mode: 'isolated', cidr: '10.40.0.0/24' }),
        ),
        'networks[4].name',
        'duplicate network name "iso" (already used at networks[1].name)',
      ));
    it('vms', () =>
      expectIssue(
        issuesOf((s) => s.vms.push({ name: 'db1', host: 'host2', nics: [{ network: 'nat2' }] })),
        'vms[3].name',
        'duplicate VM name "db1"',
      ));
    it('disks within a VM', () =>
      expectIssue(
        issuesOf((s) => s.vms[1].disks.push({ name: 'data', sizeMiB: 5 })),
        'vms[1].disks[1].name',
        'duplicate disk name in VM "db1"',
      ));
    it('lab machines across hosts and peers', () =>
      expectIssue(
        issuesOf((s) => s.lab.peers.push({ name: 'host2', address: '192.168.1.21' }), true),
        'lab.peers[1].name',
        'duplicate lab machine name "host2"',
      ));
  });

  describe('unknown references', () => {
    it('vm.host', () =>
      expectIssue(
        issuesOf((s) => (s.vms[2].host = 'host9')),
        'vms[2].host',
        'unknown host "host9" (hosts: host1, host2)',
      ));
    it('network.host', () =>
      expectIssue(
        issuesOf((s) => (s.networks[3].host = 'host9')),
        'networks[3].host',
        'unknown host "host9"',
      ));
    it('nic.network', () =>
      expectIssue(
        issuesOf((s) => (s.vms[2].nics[0].network = 'nope')),
        'vms[2].nics[0].network',
        'unknown network "nope" (networks: natnet',
      ));
    it('forward.vm', () =>
      expectIssue(
        issuesOf((s) => (s.networks[0].forwards[0].vm = 'ghost')),
        'networks[0].forwards[0].vm',
        'unknown VM "ghost"',
      ));
  });

  it('refuses a NIC on a network of another host', () =>
    expectIssue(
      issuesOf((s) => s.vms[2].nics.push({ network: 'iso' })),
      'vms[2].nics[1].network',
      'network "iso" is on host "host1" but VM "app1" is on host "host2"',
    ));

  describe('CIDRs', () => {
    it('overlapping networks on one host', () =>
      expectIssue(
        issuesOf((s) =>
          s.networks.push({ name: 'big', host: 'host1', mode: 'isolated', cidr: '10.0.0.0/8' }),
        ),
        'networks[4].cidr',
        '10.0.0.0/8 overlaps network "natnet" (10.10.0.0/24, networks[0]) on host "host1"',
      ));
    it('the same subnet on two hosts is fine', () =>
      expect(issuesOf((s) => (s.networks[3].cidr = '10.10.0.0/24'))).toEqual([]));
    it('overlap with the lab LAN', () =>
      expectIssue(
        issuesOf((s) => (s.networks[3].cidr = '192.168.0.0/16'), true),
        'networks[3].cidr',
        'overlaps the lab LAN 192.168.1.0/24',
      ));
    it('overlap with the lab upstream', () =>
      expectIssue(
        issuesOf((s) => (s.networks[3].cidr = '203.0.113.0/25'), true),
        'networks[3].cidr',
        'overlaps the lab upstream network',
      ));
    it('host bits set', () =>
      expectIssue(
        issuesOf((s) => (s.networks[3].cidr = '10.30.0.7/24')),
        'networks[3].cidr',
        'write the network address, 10.30.0.0/24',
      ));
  });

  describe('gateway and DHCP range', () => {
    it('gateway outside the CIDR', () =>
      expectIssue(
        issuesOf((s) => (s.networks[1].gateway = '10.21.0.1')),
        'networks[1].gateway',
        'gateway 10.21.0.1 is outside 10.20.0.0/24',
      ));
    it('gateway on the broadcast address', () =>
      expectIssue(
        issuesOf((s) => (s.networks[1].gateway = '10.20.0.255')),
        'networks[1].gateway',
        'broadcast address',
      ));
    it('DHCP range outside the CIDR', () =>
      expectIssue(
        issuesOf((s) => (s.networks[1].dhcp.end = '10.20.1.5')),
        'networks[1].dhcp.end',
        'DHCP range end 10.20.1.5 is outside 10.20.0.0/24',
      ));
    it('DHCP range inverted', () =>
      expectIssue(
        issuesOf((s) => (s.networks[1].dhcp = { start: '10.20.0.60', end: '10.20.0.50' })),
        'networks[1].dhcp',
        'is inverted',
      ));
    it('DHCP range containing the gateway', () =>
      expectIssue(
        issuesOf((s) => (s.networks[1].dhcp = { start: '10.20.0.200', end: '10.20.0.254' })),
        'networks[1].dhcp',
        'contains the gateway 10.20.0.254',
      ));
  });

  describe('guest filters', () => {
    it('allowedAddresses with portSecurity: false', () =>
      expectIssue(
        issuesOf((s) => {
          s.vms[0].nics[0].portSecurity = false;
          s.vms[0].nics[0].allowedAddresses = ['10.10.0.50'];
        }),
        'vms[0].nics[0].allowedAddresses',
        'portSecurity: false lets every address out already',
      ));
    it('an allowed address that is not an address', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[0].allowedAddresses = ['10.10.0.500'])),
        'vms[0].nics[0].allowedAddresses[0]',
        'IPv4',
      ));
    it('a host service listed twice', () =>
      expectIssue(
        issuesOf(
          (s) =>
            (s.networks[1].hostServices = [
              { protocol: 'tcp', port: 22 },
              { protocol: 'tcp', port: 22 },
            ]),
        ),
        'networks[1].hostServices',
        'lists a service twice',
      ));
    it('a host service port out of range', () =>
      expectIssue(
        issuesOf((s) => (s.networks[1].hostServices = [{ protocol: 'tcp', port: 0 }])),
        'networks[1].hostServices[0].port',
        '',
      ));
    it('accepts a VIP and host services', () =>
      expect(
        issuesOf((s) => {
          s.vms[0].nics[0].allowedAddresses = ['10.10.0.50'];
          s.networks[1].hostServices = [{ protocol: 'udp', port: 123 }];
        }),
      ).toEqual([]));
  });

  describe('fixed NIC addresses', () => {
    it('outside the CIDR', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[0].ip = '10.11.0.10')),
        'vms[0].nics[0].ip',
        '10.11.0.10 is outside 10.10.0.0/24 (network "natnet")',
      ));
    it('the network address', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[0].ip = '10.10.0.0')),
        'vms[0].nics[0].ip',
        'network address',
      ));
    it('the broadcast address', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[0].ip = '10.10.0.255')),
        'vms[0].nics[0].ip',
        'broadcast address',
      ));
    it('the gateway', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[0].ip = '10.10.0.1')),
        'vms[0].nics[0].ip',
        'is the gateway of network "natnet"',
      ));
    it('inside the default DHCP range', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[0].ip = '10.10.0.150')),
        'vms[0].nics[0].ip',
        'collides with the DHCP range 10.10.0.100-10.10.0.199',
      ));
    it('inside an explicit DHCP range', () =>
      expectIssue(
        issuesOf((s) => (s.vms[1].nics[0].ip = '10.20.0.55')),
        'vms[1].nics[0].ip',
        'collides with the DHCP range 10.20.0.50-10.20.0.60',
      ));
    it('duplicate on one network', () =>
      expectIssue(
        issuesOf((s) =>
          s.vms.push({ name: 'web2', host: 'host1', nics: [{ network: 'natnet', ip: '10.10.0.10' }] }),
        ),
        'vms[3].nics[0].ip',
        'address 10.10.0.10 is already used by vms[0].nics[0].ip',
      ));
    it('duplicate across bridge networks (one physical LAN)', () =>
      expectIssue(
        issuesOf((s) => {
          s.networks.push({ name: 'lan2', host: 'host2', mode: 'bridge' });
          s.vms[2].nics.push({ network: 'lan2', ip: '192.168.1.50' });
        }),
        'vms[2].nics[1].ip',
        'already used by vms[0].nics[1].ip',
      ));
    it('bridge address outside the lab LAN', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[1].ip = '172.16.0.5'), true),
        'vms[0].nics[1].ip',
        'outside 192.168.1.0/24',
      ));
    it('bridge address of a lab machine', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[1].ip = '192.168.1.20'), true),
        'vms[0].nics[1].ip',
        'already used by lab machine lab.peers[0].address',
      ));
    it('bridge address on the lab gateway', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[1].ip = '192.168.1.1'), true),
        'vms[0].nics[1].ip',
        'lab LAN gateway',
      ));
    it('bridge address in the lab DHCP range', () =>
      expectIssue(
        issuesOf((s) => (s.vms[0].nics[1].ip = '192.168.1.220'), true),
        'vms[0].nics[1].ip',
        'collides with the lab DHCP range',
      ));
  });

  describe('MACs', () => {
    it('duplicate explicit MACs', () =>
      expectIssue(
        issuesOf((s) => (s.vms[1].nics[0].mac = '52:54:00:aa:bb:cc')),
        'vms[2].nics[0].mac',
        'MAC 52:54:00:aa:bb:cc is already used by vms[1].nics[0]',
      ));
    it('two derived MACs that meet: the issue says the MAC was derived and asks for an explicit one', () => {
      // Two VM names whose first NICs' derived MACs are equal (24 bits: a birthday search of a few thousand names).
      const seen = new Map<string, string>();
      let pair: [string, string] | undefined;
      for (let i = 0; !pair; i++) {
        const mac = derivedMac(`v${i}`, 0);
        const first = seen.get(mac);
        if (first) pair = [first, `v${i}`];
        else seen.set(mac, `v${i}`);
      }
      const [a, b] = pair;
      expectIssue(
        issuesOf((s) => {
          s.vms[1].name = a;
          s.vms.push({ name: b, host: 'host2', nics: [{ network: 'nat2' }] });
        }),
        'vms[3].nics[0].mac',
        `the MAC derived for this NIC from its VM's name and index, ${derivedMac(a, 0)}, is already used by vms[1].nics[0]; give one of them a mac of its own`,
      );
    });
    it('an explicit MAC equal to a derived one', () =>
      expectIssue(
        issuesOf((s) => (s.vms[2].nics[0].mac = derivedMac('web1', 0))),
        'vms[2].nics[0].mac',
        'already used by vms[0].nics[0]',
      ));
  });

  describe('forwards', () => {
    it('to a VM with no NIC on the network', () =>
      expectIssue(
        issuesOf((s) => (s.networks[0].forwards[0].vm = 'db1')),
        'networks[0].forwards[0].vm',
        'VM "db1" has no NIC on network "natnet"',
      ));
    it('to a NIC without a fixed ip', () =>
      expectIssue(
        issuesOf((s) => delete s.vms[0].nics[0].ip),
        'networks[0].forwards[0].vm',
        'give vms[0].nics[0] a fixed ip so the forward has a stable target',
      ));
    it('duplicate hostPort and protocol on one host', () =>
      expectIssue(
        issuesOf((s) => {
          s.networks.push({
            name: 'nat3',
            host: 'host1',
            mode: 'nat',
            cidr: '10.50.0.0/24',
            forwards: [{ hostPort: 8080, vm: 'db1', vmPort: 1 }],
          });
          s.vms[1].nics.push({ network: 'nat3', ip: '10.50.0.9' });
        }),
        'networks[4].forwards[0].hostPort',
        'tcp port 8080 on host "host1" is already forwarded by networks[0].forwards[0]',
      ));
    it('the same port with another protocol or on another host is fine', () =>
      expect(
        issuesOf((s) => {
          s.networks[0].forwards.push({ protocol: 'udp', hostPort: 8080, vm: 'web1', vmPort: 53 });
          s.networks[3].forwards = [{ hostPort: 8080, vm: 'app1', vmPort: 80 }];
          s.vms[2].nics[0].ip = '10.30.0.9';
        }),
      ).toEqual([]));
  });

  it('allows two NICs of one VM on the same network', () =>
    expect(
      issuesOf((s) => s.vms[0].nics.push({ network: 'lan' }, { network: 'natnet', ip: '10.10.0.11' })),
    ).toEqual([]));

  it('refuses two bridge networks on one uplink of a host', () =>
    expectIssue(
      issuesOf((s) => s.networks.push({ name: 'lan2', host: 'host1', mode: 'bridge', uplink: 'eth0' })),
      'networks[4].uplink',
      'uplink eth0 on host "host1" is already enslaved by bridge network "lan"',
    ));
  it('allows bridge networks on different uplinks', () =>
    expect(
      issuesOf((s) => s.networks.push({ name: 'lan2', host: 'host1', mode: 'bridge', uplink: 'eth1' })),
    ).toEqual([]));

  describe('lab', () => {
    it('a spec host missing from lab.hosts', () =>
      expectIssue(
        issuesOf((s) => s.lab.hosts.pop(), true),
        'hosts[1].name',
        'host "host2" has no machine in lab.hosts',
      ));
    it('a lab host missing from hosts', () =>
      expectIssue(
        issuesOf((s) => s.lab.hosts.push({ name: 'host3', address: '192.168.1.12' }), true),
        'lab.hosts[2].name',
        'lab host "host3" is not in hosts',
      ));
    it('a lab address outside the LAN', () =>
      expectIssue(
        issuesOf((s) => (s.lab.hosts[0].address = '192.168.2.10'), true),
        'lab.hosts[0].address',
        '192.168.2.10 is outside 192.168.1.0/24',
      ));
    it('duplicate lab addresses', () =>
      expectIssue(
        issuesOf((s) => (s.lab.peers[0].address = '192.168.1.11'), true),
        'lab.peers[0].address',
        'duplicate address 192.168.1.11 (already used at lab.hosts[1].address)',
      ));
    it('a lab address on the gateway', () =>
      expectIssue(
        issuesOf((s) => (s.lab.hosts[0].address = '192.168.1.1'), true),
        'lab.hosts[0].address',
        'is the lab LAN gateway',
      ));
    it('a lab gateway outside the LAN', () =>
      expectIssue(
        issuesOf((s) => (s.lab.lan.gateway = '10.9.9.9'), true),
        'lab.lan.gateway',
        'outside 192.168.1.0/24',
      ));
    it('the upstream address outside the upstream CIDR', () =>
      expectIssue(
        issuesOf((s) => (s.lab.upstream.address = '198.51.100.1'), true),
        'lab.upstream.address',
        '198.51.100.1 is outside 203.0.113.0/24',
      ));
    it('LAN and upstream overlapping', () =>
      expectIssue(
        issuesOf(
          (s) => Object.assign(s.lab.upstream, { cidr: '192.168.0.0/16', address: '192.168.7.1' }),
          true,
        ),
        'lab.upstream.cidr',
        'overlaps the lab LAN 192.168.1.0/24',
      ));
  });

  it('reports every issue at once', () => {
    const is = issuesOf((s) => {
      s.vms[0].host = 'nohost';
      s.vms[1].nics[0].ip = '10.99.0.1';
      s.hosts.push({ name: 'host1' });
    });
    expect(is.map((i) => i.path).sort()).toEqual(['hosts[2].name', 'vms[0].host', 'vms[1].nics[0].ip']);
  });
});

describe('the lab management address', () => {
  const base = `version: 1
hosts: [{ name: h1 }]
lab:
  name: t
  lan: { cidr: 192.168.9.0/24, gateway: 192.168.9.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.2 }
  hosts: [{ name: h1, address: 192.168.9.10 }]
`;
  it('refuses a lab machine on the highest usable LAN address', () => {
    expect(() => loadSpec(base.replace('192.168.9.10', '192.168.9.254'))).toThrow(
      /lab\.hosts\[0\]\.address: taken: 192\.168\.9\.254 is the lab's management address/,
    );
  });
  it('refuses a LAN DHCP range that reaches it', () => {
    expect(() =>
      loadSpec(
        base.replace(
          'gateway: 192.168.9.1 }',
          'gateway: 192.168.9.1, dhcp: { start: 192.168.9.200, end: 192.168.9.254 } }',
        ),
      ),
    ).toThrow(/lab\.lan\.dhcp: the range must end below 192\.168\.9\.254/);
  });
});

describe('host support', () => {
  const spec = loadSpec(`version: 1
hosts: [{ name: h1, address: 10.0.0.1 }, { name: h2, address: 10.0.0.2 }]
networks:
  - { name: v100, mode: vlan, vlan: 100, hosts: [h1, h2] }
  - { name: ov, mode: vxlan, vni: 7, backend: ovs, hosts: [h1, h2] }
`);
  const noVlan = { backends: ['linux', 'ovs'], network: { vlan: false, vxlan: true } };
  it('refuses a linux vlan network on a host without 802.1Q and names ovs as the remedy', () => {
    const issues = checkHostSupport(spec, { h1: noVlan, h2: noVlan });
    expect(issues.map((i) => i.path)).toEqual(['networks[0].backend', 'networks[0].backend']);
    expect(issues[0]!.message).toMatch(/no 802\.1Q VLAN devices.*use backend: ovs/);
  });
  it('refuses a backend a host does not have', () => {
    const issues = checkHostSupport(spec, {
      h1: noVlan,
      h2: { backends: ['linux'], network: { vlan: true } },
    });
    expect(issues).toContainEqual({
      path: 'networks[1].backend',
      message: expect.stringMatching(/host "h2" has no ovs backend.*openvswitch-switch/),
    });
  });
  it('accepts what the hosts can do', () => {
    expect(
      checkHostSupport(spec, {
        h1: { backends: ['linux', 'ovs'], network: { vlan: true } },
        h2: { backends: ['linux', 'ovs'], network: { vlan: true } },
      }),
    ).toEqual([]);
  });
});
