import { describe, expect, it } from 'vitest';
import type { NetworkConfig } from '../../../shared/model.js';
import { GUEST_INPUT_RULES } from '../linux/host-input.js';
import { buildOvsHostInput } from './host-input.js';

const net = (name: string, extra: Partial<NetworkConfig> = {}): NetworkConfig => ({
  name,
  mode: 'vlan',
  backend: 'ovs',
  bridge: 'vlo-eth1',
  mtu: 1500,
  vlan: { id: 300, trunk: 'eth1' },
  forwards: [],
  ...extra,
});
const subnet: NetworkConfig['subnet'] = {
  cidr: '10.30.0.0/24',
  gateway: '10.30.0.1',
  prefixLength: 24,
  dhcpStart: '10.30.0.100',
  dhcpEnd: '10.30.0.150',
  reservations: [],
};

describe('host input policy of OVS networks', () => {
  it('the gateway port and the bridges are guest devices; the gateway opens DHCP, DNS, ping and hostServices', () => {
    const table = buildOvsHostInput([
      {
        cfg: net('v300', { subnet, hostServices: [{ protocol: 'tcp', port: 7000 }] }),
        gatewayPort: 'vli-v300',
      },
      { cfg: net('v100', { vlan: { id: 100, trunk: 'eth1' } }) },
      { cfg: net('ov', { mode: 'vxlan', bridge: 'vlb-ov' }) },
    ]);
    expect(table).toBe(
      [
        'table inet vmlink-ovs {',
        '\tset guest_bridges {',
        '\t\ttype ifname',
        '\t\telements = { "vlb-ov", "vli-v300", "vlo-eth1" }',
        '\t}',
        '\tmap host_services {',
        '\t\ttype ifname : verdict',
        '\t\telements = { "vli-v300" : jump in-vli-v300 }',
        '\t}',
        '\tchain in-vli-v300 {',
        '\t\tudp sport 68 udp dport 67 accept comment "net:v300"',
        '\t\tip daddr 10.30.0.1 meta l4proto { tcp, udp } th dport 53 accept comment "net:v300"',
        '\t\tip daddr 10.30.0.1 icmp type echo-request accept comment "net:v300"',
        '\t\ttcp dport 7000 accept comment "net:v300"',
        '\t}',
        '\tchain guest_input {',
        ...GUEST_INPUT_RULES.map((r) => `\t\t${r}`),
        '\t}',
        '\tchain input {',
        '\t\ttype filter hook input priority filter; policy accept;',
        '\t\tiifname @guest_bridges jump guest_input',
        '\t}',
        '}',
        '',
      ].join('\n'),
    );
    // The shared policy ends in the counted drop of everything else.
    expect(GUEST_INPUT_RULES.at(-1)).toMatch(/^counter drop comment "guest to host"$/);
  });

  it('no networks: no table; names that could inject rules are refused', () => {
    expect(buildOvsHostInput([])).toBeUndefined();
    expect(() => buildOvsHostInput([{ cfg: net('x', { bridge: 'a" accept' }) }])).toThrow();
    expect(() =>
      buildOvsHostInput([
        { cfg: net('x', { subnet: { ...subnet!, gateway: '1.2.3.4 accept' } }), gatewayPort: 'vli-x' },
      ]),
    ).toThrow(/not an IPv4 address/);
    expect(() =>
      buildOvsHostInput([
        { cfg: net('x', { subnet, hostServices: [{ protocol: 'tcp', port: 0 }] }), gatewayPort: 'vli-x' },
      ]),
    ).toThrow(/hostServices/);
  });
});
