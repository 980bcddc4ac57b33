import { describe, expect, it } from 'vitest';
import { InvalidSpecError, type SpecIssue } from '../shared/errors.js';
import { loadSpec } from './load.js';
import { hostSegments, networkHosts, segmentMtu, underlayMtu } from './topology.js';

// biome-ignore lint/suspicious/noExplicitAny: test fixtures are raw spec documents mutated freely.
type Raw = any;

/** Three lab hosts: two overlays (overlapping CIDRs), two OVS VLANs on a trunk segment, a trunk NIC. */
function base(): Raw {
  return {
    version: 1,
    site: {
      environments: [
        { name: 'production', vlans: [{ from: 100, to: 199 }] },
        { name: 'test', vlans: [{ from: 200, to: 299 }] },
      ],
    },
    hosts: [
      {
        name: 'host1',
        network: { mtu: 9000, addresses: ['192.168.50.10/24'], gateway: '192.168.50.1' },
        confirmTimeoutSeconds: 30,
      },
      { name: 'host2' },
      { name: 'host3' },
    ],
    networks: [
      { name: 'ov1', mode: 'vxlan', vni: 1001, cidr: '10.20.0.0/24', gateway: { host: 'host1', nat: true } },
      { name: 'ov2', mode: 'vxlan', hosts: ['host2', 'host3'], vni: 1002, cidr: '10.20.0.0/24' },
      {
        name: 'prod100',
        mode: 'vlan',
        vlan: 100,
        environment: 'production',
        segment: 'trunk',
        hosts: ['host1', 'host2'],
        backend: 'ovs',
        cidr: '10.100.0.0/24',
        gateway: { host: 'host2' },
      },
      {
        name: 'test200',
        mode: 'vlan',
        vlan: 200,
        environment: 'test',
        segment: 'trunk',
        hosts: ['host1', 'host2'],
        backend: 'ovs',
      },
      { name: 'nat1', host: 'host1', mode: 'nat', cidr: '10.30.0.0/24' },
    ],
    vms: [
      { name: 'r1', host: 'host1', nics: [{ network: 'prod100' }, { trunk: ['prod100', 'test200'] }] },
      {
        name: 'a1',
        host: 'host2',
        nics: [
          { network: 'ov1', ip: '10.20.0.10' },
          { network: 'ov2', ip: '10.20.0.10' },
        ],
      },
      { name: 'b1', host: 'host3', nics: [{ network: 'ov2', ip: '10.20.0.11' }] },
    ],
    lab: {
      name: 'mh',
      lan: { cidr: '192.168.50.0/24', gateway: '192.168.50.1', mtu: 9000 },
      upstream: { cidr: '203.0.113.0/24', address: '203.0.113.10' },
      hosts: [
        { name: 'host1', address: '192.168.50.10' },
        { name: 'host2', address: '192.168.50.11' },
        { name: 'host3', address: '192.168.50.12' },
      ],
      segments: [{ name: 'trunk' }],
    },
  };
}

/** The same without a lab: addresses and segments given on the hosts. */
function noLab(): Raw {
  const s = base();
  delete s.lab;
  s.hosts[0].address = '192.168.50.10';
  s.hosts[1].address = '192.168.50.11';
  s.hosts[2].address = '192.168.50.12';
  for (const h of s.hosts) h.segments = { trunk: 'eth1' };
  return s;
}

function issuesOf(s: Raw): SpecIssue[] {
  try {
    loadSpec(JSON.stringify(s));
  } catch (e) {
    if (e instanceof InvalidSpecError) return e.issues;
    throw e;
  }
  return [];
}

function issues(mutate: (s: Raw) => void, make: () => Raw = base): SpecIssue[] {
  const s = make();
  mutate(s);
  return issuesOf(s);
}

const at = (path: string, text: string | RegExp) => ({
  path,
  message: typeof text === 'string' ? expect.stringContaining(text) : expect.stringMatching(text),
});

describe('multi-host specs', () => {
  it('accepts the base spec, with a lab and without one', () => {
    expect(issuesOf(base())).toEqual([]);
    expect(issuesOf(noLab())).toEqual([]);
  });

  it('applies defaults: vxlan mtu 1450, vlan segment default, backend linux, confirm 60 s, all hosts', () => {
    const s = base();
    s.networks.push({ name: 'v5', mode: 'vlan', vlan: 5 });
    const spec = loadSpec(JSON.stringify(s));
    expect(spec.networks[0]).toMatchObject({ mtu: 1450, backend: 'linux' });
    expect(spec.networks[5]).toMatchObject({ segment: 'default', mtu: 1500, backend: 'linux' });
    expect(spec.networks[4]).toMatchObject({ backend: 'linux' });
    expect(spec.hosts[1]!.confirmTimeoutSeconds).toBe(60);
    expect(networkHosts(spec, spec.networks[0]!)).toEqual(['host1', 'host2', 'host3']);
    expect(networkHosts(spec, spec.networks[4]!)).toEqual(['host1']);
    expect(hostSegments(spec, spec.hosts[0]!)).toEqual({ default: 'eth0', trunk: 'eth1' });
    expect(underlayMtu(spec, spec.hosts[0]!)).toBe(9000);
    expect(segmentMtu(spec, spec.hosts[1]!, 'trunk')).toBe(1500);
    expect(segmentMtu(spec, spec.hosts[1]!, 'default')).toBe(9000);
  });

  it('keeps lab-free hosts without extra segments to their uplink', () => {
    const spec = loadSpec('version: 1\nhosts: [{ name: h, uplink: enp1s0 }]\n');
    expect(hostSegments(spec, spec.hosts[0]!)).toEqual({ default: 'enp1s0' });
    expect(underlayMtu(spec, spec.hosts[0]!)).toBe(1500);
    expect(segmentMtu(spec, spec.hosts[0]!, 'x')).toBeUndefined();
  });

  describe('VLAN ids', () => {
    it.each([0, 4095, -1, 5000])('refuses %s', (id) => {
      expect(issues((s) => (s.networks[2].vlan = id)).map((i) => i.path)).toContain('networks[2].vlan');
    });

    it('refuses an id outside its environment, naming the ranges', () => {
      expect(issues((s) => (s.networks[2].vlan = 300))).toContainEqual({
        path: 'networks[2].vlan',
        message: expect.stringMatching(/^300 is outside environment production's VLANs 100-199/),
      });
    });

    it('lists every range of an environment', () => {
      const is = issues((s) => {
        s.site.environments[0].vlans.push({ from: 150, to: 150 });
        s.site.environments[0].vlans[0] = { from: 100, to: 120 };
        s.networks[2].vlan = 130;
      });
      expect(is).toContainEqual(
        at('networks[2].vlan', "130 is outside environment production's VLANs 100-120, 150-150"),
      );
    });

    it('refuses an unknown environment', () => {
      expect(issues((s) => (s.networks[2].environment = 'staging'))).toEqual([
        at('networks[2].environment', 'unknown environment "staging" (site.environments: production, test)'),
      ]);
      expect(
        issues((s) => {
          delete s.site;
          s.networks[3].environment = undefined;
        }),
      ).toEqual([at('networks[2].environment', 'no site.environments are defined')]);
    });

    it('refuses a duplicate id on one segment, allows it on another', () => {
      expect(issues((s) => (s.networks[3].vlan = 100))).toEqual(
        expect.arrayContaining([
          at(
            'networks[3].vlan',
            'VLAN 100 is already used on segment trunk by network "prod100" (networks[2])',
          ),
        ]),
      );
      expect(
        issues((s) => {
          s.networks[3].vlan = 100;
          s.networks[3].environment = 'production';
          s.networks[3].segment = 'default';
          s.vms[0].nics.pop();
        }),
      ).toEqual([]);
    });

    it('refuses inverted and overlapping environment ranges', () => {
      expect(issues((s) => (s.site.environments[1].vlans = [{ from: 299, to: 200 }]))).toContainEqual(
        at('site.environments[1].vlans[0]', 'from 299 is above to 200'),
      );
      expect(issues((s) => (s.site.environments[1].vlans = [{ from: 150, to: 299 }]))).toContainEqual(
        at('site.environments[1].vlans[0]', "150-299 overlaps environment production's VLANs 100-199"),
      );
      expect(
        issues((s) => s.site.environments.push({ name: 'test', vlans: [{ from: 300, to: 301 }] })),
      ).toContainEqual(at('site.environments[2].name', 'duplicate environment name "test"'));
    });
  });

  it('refuses a duplicate VNI', () => {
    expect(issues((s) => (s.networks[1].vni = 1001))).toEqual([
      at('networks[1].vni', 'VNI 1001 is already used by vxlan network "ov1" (networks[0])'),
    ]);
  });

  it('refuses VNIs out of range', () => {
    for (const vni of [0, 16_777_216])
      expect(issues((s) => (s.networks[0].vni = vni)).map((i) => i.path)).toEqual(['networks[0].vni']);
  });

  describe('member hosts', () => {
    it('refuses unknown and duplicate hosts', () => {
      expect(issues((s) => (s.networks[1].hosts = ['host2', 'nope', 'host2', 'host3']))).toEqual([
        at('networks[1].hosts[1]', 'unknown host "nope"'),
        at('networks[1].hosts[2]', 'host "host2" is listed twice (already at networks[1].hosts[0])'),
      ]);
    });

    it('refuses a gateway host outside the network', () => {
      expect(issues((s) => (s.networks[2].gateway.host = 'host3'))).toEqual([
        at('networks[2].gateway.host', 'host "host3" is not among the network\'s hosts (host1, host2)'),
      ]);
      expect(issues((s) => (s.networks[2].gateway.host = 'zz'))).toEqual([
        at('networks[2].gateway.host', 'unknown host "zz"'),
      ]);
    });

    it('refuses a VM NIC on a network that does not reach its host', () => {
      expect(issues((s) => (s.vms[2].nics[0].network = 'prod100'))).toContainEqual(
        at(
          'vms[2].nics[0].network',
          'network "prod100" does not reach host "host3" where VM "b1" runs (its hosts: host1, host2); add "host3" to networks[2].hosts',
        ),
      );
    });

    it('explains host on a vxlan network and hosts on a nat network', () => {
      expect(issues((s) => (s.networks[0].host = 'host1'))).toEqual([
        at('networks[0].host', 'vxlan networks span hosts: write hosts: [host1, ...]'),
      ]);
      expect(issues((s) => (s.networks[4].hosts = ['host1']))).toEqual([
        at('networks[4].hosts', 'hosts is for vxlan and vlan networks; a nat network lives on one host'),
      ]);
    });
  });

  describe('MTU', () => {
    it('refuses a vxlan MTU that does not fit the underlay, naming both fixes', () => {
      const is = issues((s) => {
        delete s.hosts[0].network;
        delete s.lab.lan.mtu;
        s.networks[0].mtu = 1500;
      });
      expect(is).toContainEqual({
        path: 'networks[0].mtu',
        message:
          "1500 + 50 bytes of VXLAN overhead exceeds host2's underlay MTU 1500: lower it to 1450, or set hosts[1].network.mtu: 9000 for jumbo frames (the lab LAN needs lab.lan.mtu: 9000 too)",
      });
      expect(is.filter((i) => i.path === 'networks[0].mtu')).toHaveLength(3);
    });

    it('accepts 8950 on a jumbo underlay and refuses 9000', () => {
      expect(issues((s) => (s.networks[0].mtu = 8950))).toEqual([]);
      expect(issues((s) => (s.networks[0].mtu = 9000))).toContainEqual(
        at(
          'networks[0].mtu',
          "9000 + 50 bytes of VXLAN overhead exceeds host1's underlay MTU 9000: lower it to 8950, or set hosts[0].network.mtu: 9050",
        ),
      );
    });

    it('uses the host network mtu over the lab LAN mtu, and no lab hint without a lab', () => {
      const is = issues((s) => {
        s.hosts[1].network = { mtu: 1400 };
      }, noLab);
      expect(is).toEqual([
        at(
          'networks[0].mtu',
          "1450 + 50 bytes of VXLAN overhead exceeds host2's underlay MTU 1400: lower it to 1350, or set hosts[1].network.mtu: 9000 for jumbo frames",
        ),
        expect.objectContaining({ path: 'networks[1].mtu' }),
      ]);
      expect(is[0]!.message).not.toContain('lab');
    });

    it('refuses a host MTU above the lab LAN MTU', () => {
      expect(issues((s) => delete s.lab.lan.mtu)).toContainEqual(
        at(
          'hosts[0].network.mtu',
          "9000 exceeds the lab LAN's MTU 1500: the lab switch would drop bigger frames; set lab.lan.mtu: 9000",
        ),
      );
    });

    it('refuses a vlan MTU above its segment MTU', () => {
      expect(issues((s) => (s.networks[2].mtu = 9000))).toEqual([
        at(
          'networks[2].mtu',
          '9000 exceeds the MTU 1500 of segment trunk on host "host1" (eth1): lower it to 1500, or set lab.segments[0].mtu: 9000',
        ),
        at('networks[2].mtu', 'segment trunk on host "host2"'),
      ]);
      expect(
        issues((s) => {
          s.networks[2].mtu = 9000;
          s.lab.segments[0].mtu = 9000;
        }),
      ).toEqual([]);
      // On the default segment the underlay MTU counts.
      expect(
        issues((s) => {
          s.networks[3].segment = 'default';
          s.networks[3].mtu = 9000;
          s.vms[0].nics.pop();
        }),
      ).toEqual([]);
    });
  });

  describe('segments', () => {
    it('refuses a segment a member host lacks', () => {
      expect(
        issues((s) => {
          delete s.hosts[1].segments;
        }, noLab),
      ).toEqual([
        at(
          'networks[2].segment',
          'segment "trunk" does not exist on host "host2" (its segments: default); add it to hosts[1].segments (such as trunk: eth1)',
        ),
        at('networks[3].segment', 'host "host2"'),
      ]);
    });

    it('refuses a lab segment named default', () => {
      expect(issues((s) => s.lab.segments.push({ name: 'default' }))).toEqual([
        at('lab.segments[1].name', '"default" is the segment of every host\'s uplink'),
      ]);
    });

    it('refuses an ovs vlan network on an uplink a bridge network enslaves', () => {
      expect(
        issues((s) => {
          s.networks[3].segment = 'default';
          s.networks.push({ name: 'lan', host: 'host2', mode: 'bridge' });
          s.vms[0].nics.pop();
        }),
      ).toEqual([
        at(
          'networks[3].segment',
          'segment default is eth0 on host "host2", which bridge network "lan" already enslaves',
        ),
      ]);
    });
  });

  describe('underlay addresses', () => {
    it('needs an address for vxlan hosts without a lab', () => {
      expect(issues((s) => delete s.hosts[2].address, noLab)).toEqual([
        at(
          'hosts[2].address',
          'host "host3" carries vxlan network "ov1" (networks[0]) and needs an underlay address for its VXLAN endpoint: set hosts[2].address',
        ),
      ]);
    });

    it('refuses an address that differs from the lab machine or repeats another host', () => {
      expect(issues((s) => (s.hosts[1].address = '192.168.50.99'))).toEqual([
        at(
          'hosts[1].address',
          "192.168.50.99 differs from the lab machine's address 192.168.50.11 (lab.hosts[1].address)",
        ),
      ]);
      expect(issues((s) => (s.hosts[2].address = '192.168.50.11'), noLab)).toEqual([
        at('hosts[2].address', '192.168.50.11 is already the address of host "host2"'),
      ]);
    });

    it('refuses uplink addresses that are no host address, miss the underlay address, or an off-link gateway', () => {
      expect(issues((s) => (s.hosts[0].network.addresses = ['192.168.50.0/24', '192.168.50.10/24']))).toEqual(
        [
          at(
            'hosts[0].network.addresses[0]',
            '192.168.50.0 is the network address of 192.168.50.0/24; pick a host address',
          ),
        ],
      );
      expect(issues((s) => (s.hosts[0].network.addresses = ['192.168.50.255/24']))).toEqual(
        expect.arrayContaining([at('hosts[0].network.addresses[0]', 'broadcast address')]),
      );
      expect(issues((s) => (s.hosts[0].network.addresses = ['192.168.50.20/24']))).toEqual([
        at(
          'hosts[0].network.addresses',
          'none of them is host "host1"\'s underlay address 192.168.50.10 (its lab address); add 192.168.50.10/24',
        ),
      ]);
      expect(issues((s) => (s.hosts[0].network.gateway = '10.9.9.1'))).toEqual([
        at(
          'hosts[0].network.gateway',
          '10.9.9.1 is not inside any of hosts[0].network.addresses (192.168.50.10/24)',
        ),
      ]);
      expect(issues((s) => (s.hosts[0].network.addresses = ['192.168.50.10']))).toEqual([
        at('hosts[0].network.addresses[0]', 'must be an IPv4 address with prefix'),
      ]);
      expect(issues((s) => (s.hosts[0].confirmTimeoutSeconds = 2)).map((i) => i.path)).toEqual([
        'hosts[0].confirmTimeoutSeconds',
      ]);
    });
  });

  describe('subnets', () => {
    it('lets overlays without a gateway overlap anything', () => {
      expect(issues((s) => (s.networks[1].cidr = '10.0.0.0/8'))).toEqual([]);
      expect(
        issues((s) => {
          s.networks[1].cidr = '192.168.50.0/24';
          delete s.vms[1].nics[1].ip;
          delete s.vms[2].nics[0].ip;
        }),
      ).toEqual([]);
    });

    it('refuses a gateway network overlapping another subnet on its gateway host only', () => {
      expect(issues((s) => (s.networks[0].cidr = '10.0.0.0/8'))).toEqual([
        at(
          'networks[4].cidr',
          '10.30.0.0/24 overlaps network "ov1" (10.0.0.0/8, networks[0]) on host "host1"',
        ),
      ]);
      expect(issues((s) => (s.networks[2].cidr = '10.30.0.0/24'))).toEqual([]);
      expect(issues((s) => (s.networks[2].cidr = '10.20.0.0/24'))).toEqual([]);
      expect(
        issues((s) => {
          s.networks[2].cidr = '10.20.0.0/24';
          s.networks[2].gateway.host = 'host1';
        }),
      ).toEqual([
        at(
          'networks[2].cidr',
          '10.20.0.0/24 overlaps network "ov1" (10.20.0.0/24, networks[0]) on host "host1", where gateway.host routes this network; subnets routed on one host must be disjoint',
        ),
      ]);
    });

    it("refuses a gateway network on the lab LAN or on the gateway host's uplink subnet", () => {
      expect(issues((s) => (s.networks[0].cidr = '192.168.50.0/24'))).toEqual(
        expect.arrayContaining([
          at('networks[0].cidr', 'overlaps the lab LAN'),
          at(
            'networks[0].cidr',
            'overlaps host "host1"\'s uplink address 192.168.50.10/24 (hosts[0].network.addresses[0])',
          ),
        ]),
      );
    });

    it('needs a cidr for a gateway and a gateway for dhcp', () => {
      expect(issues((s) => delete s.networks[0].cidr)).toEqual([
        at('networks[0].gateway', "a gateway needs the network's subnet: add cidr"),
      ]);
      expect(issues((s) => (s.networks[1].dhcp = { start: '10.20.0.50', end: '10.20.0.60' }))).toEqual([
        at('networks[1].dhcp', 'DHCP is served by the gateway host'),
      ]);
    });

    it('checks gateway addresses, DHCP ranges and fixed addresses like nat networks', () => {
      expect(issues((s) => (s.networks[0].gateway.address = '10.21.0.1'))).toEqual([
        at('networks[0].gateway.address', 'gateway 10.21.0.1 is outside 10.20.0.0/24'),
      ]);
      expect(issues((s) => (s.vms[1].nics[0].ip = '10.20.0.1'))).toEqual([
        at('vms[1].nics[0].ip', '10.20.0.1 is the gateway of network "ov1"'),
      ]);
      expect(issues((s) => (s.vms[1].nics[0].ip = '10.20.0.150'))).toEqual([
        at('vms[1].nics[0].ip', 'collides with the DHCP range 10.20.0.100-10.20.0.199 of network "ov1"'),
      ]);
      expect(issues((s) => (s.vms[2].nics[0].ip = '10.21.0.5'))).toEqual([
        at('vms[2].nics[0].ip', '10.21.0.5 is outside 10.20.0.0/24 (network "ov2")'),
      ]);
      expect(issues((s) => (s.vms[2].nics[0].ip = '10.20.0.10'))).toEqual([
        at('vms[2].nics[0].ip', 'address 10.20.0.10 is already used by vms[1].nics[1].ip'),
      ]);
      expect(
        issues((s) => {
          delete s.networks[1].cidr;
          s.vms[2].nics[0].ip = '172.16.5.5';
        }),
      ).toEqual([]);
    });
  });

  describe('backends', () => {
    it('accepts only linux on single-host networks for now', () => {
      expect(issues((s) => (s.networks[4].backend = 'ovs'))).toEqual([
        {
          path: 'networks[4].backend',
          message:
            'backend ovs is not supported on nat networks yet; use backend: linux (or leave it out): ovs serves vxlan and vlan networks',
        },
      ]);
      expect(issues((s) => (s.networks[4].backend = 'linux'))).toEqual([]);
      expect(issues((s) => (s.networks[0].backend = 'ovs'))).toEqual([]);
      expect(issues((s) => (s.networks[0].backend = 'vpp')).map((i) => i.path)).toEqual([
        'networks[0].backend',
      ]);
    });
  });

  describe('trunk NICs', () => {
    it('needs exactly one of network and trunk', () => {
      expect(issues((s) => (s.vms[0].nics[1].network = 'prod100'))).toEqual([
        at(
          'vms[0].nics[1].trunk',
          'give either network (an access port) or trunk (a list of vlan networks), not both',
        ),
      ]);
      expect(issues((s) => (s.vms[0].nics[1] = {}))).toEqual([
        at('vms[0].nics[1].network', 'is required: give network, or trunk: [vlan networks] for a trunk port'),
      ]);
      expect(issues((s) => (s.vms[0].nics[1].trunk = [])).map((i) => i.path)).toEqual([
        'vms[0].nics[1].trunk',
      ]);
    });

    it('carries only known, distinct vlan networks of one segment with backend ovs that reach the VM host', () => {
      expect(issues((s) => (s.vms[0].nics[1].trunk = ['prod100', 'nat1', 'zz', 'prod100']))).toEqual([
        at('vms[0].nics[1].trunk[1]', 'network "nat1" is mode nat; a trunk port carries vlan networks only'),
        at('vms[0].nics[1].trunk[2]', 'unknown network "zz"'),
        at('vms[0].nics[1].trunk[3]', 'network "prod100" is listed twice'),
      ]);
      expect(issues((s) => (s.networks[3].segment = 'default'))).toEqual([
        at(
          'vms[0].nics[1].trunk[1]',
          'vlan network "test200" is on segment default but "prod100" (vms[0].nics[1].trunk[0]) is on segment trunk; a trunk port carries one segment',
        ),
      ]);
      expect(issues((s) => (s.networks[3].backend = 'linux'))).toEqual([
        at(
          'vms[0].nics[1].trunk[1]',
          'vlan network "test200" uses backend linux; trunk ports need backend: ovs on every member network (set networks[3].backend: ovs)',
        ),
      ]);
      expect(issues((s) => (s.networks[3].hosts = ['host2']))).toEqual([
        at(
          'vms[0].nics[1].trunk[1]',
          'network "test200" does not reach host "host1" where VM "r1" runs; add "host1" to networks[3].hosts',
        ),
      ]);
      expect(issues((s) => (s.vms[0].nics[1].ip = '10.100.0.5'))).toEqual([
        at('vms[0].nics[1].ip', 'a trunk port has no single address'),
      ]);
    });
  });

  it('keeps the single-host example valid', () => {
    expect(
      issuesOf({
        version: 1,
        hosts: [{ name: 'h' }],
        networks: [{ name: 'n', host: 'h', mode: 'nat', cidr: '10.0.0.0/24' }],
        vms: [{ name: 'v', host: 'h', nics: [{ network: 'n' }] }],
      }),
    ).toEqual([]);
  });
});
