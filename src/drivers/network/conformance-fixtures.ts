// The networks the conformance suite creates, one of each mode, named for the backend under test. Bridge, device
// and subnet names are fixed so that the suite's assertions can name them.
import type { NetworkBackend, NetworkConfig } from '../../shared/model.js';

/** The suite's networks (nat, isolated, vxlan overlay and its gateway, vlan) for `backend`. */
export function conformanceNetworks(backend: NetworkBackend): {
  nat: NetworkConfig;
  iso: NetworkConfig;
  vx: NetworkConfig;
  vxGw: NetworkConfig;
  vlan: NetworkConfig;
} {
  const nat: NetworkConfig = {
    name: 'conf-nat',
    mode: 'nat',
    backend,
    bridge: 'vlb-c0nf0001',
    mtu: 1500,
    subnet: {
      cidr: '10.231.0.0/24',
      gateway: '10.231.0.1',
      prefixLength: 24,
      dhcpStart: '10.231.0.100',
      dhcpEnd: '10.231.0.150',
      reservations: [{ mac: '52:54:00:23:10:0a', ip: '10.231.0.10', hostname: 'vm-a' }],
    },
    forwards: [{ protocol: 'tcp', hostPort: 18080, vm: 'vm-a', targetIp: '10.231.0.10', targetPort: 80 }],
  };
  const iso: NetworkConfig = {
    name: 'conf-iso',
    mode: 'isolated',
    backend,
    bridge: 'vlb-c0nf0002',
    mtu: 1500,
    subnet: {
      cidr: '10.232.0.0/24',
      gateway: '10.232.0.1',
      prefixLength: 24,
      dhcpStart: '10.232.0.100',
      dhcpEnd: '10.232.0.150',
      reservations: [],
    },
    forwards: [],
  };
  // vxlan: a VTEP on an underlay veth in the suite's namespace; remote VTEPs need not exist.
  const vx: NetworkConfig = {
    name: 'conf-vx',
    mode: 'vxlan',
    backend,
    bridge: 'vlb-c0nf0003',
    mtu: 1450,
    vxlan: {
      vni: 4242,
      device: 'vlx-c0nf0003',
      local: '192.0.2.1',
      remotes: ['192.0.2.2', '192.0.2.3'],
      port: 4789,
      underlay: 'vxu0',
    },
    forwards: [],
  };
  // The same kind of overlay on its NAT gateway host: address, DHCP, masquerade.
  const vxGw: NetworkConfig = {
    ...vx,
    name: 'conf-vxgw',
    bridge: 'vlb-c0nf0004',
    vxlan: { ...vx.vxlan!, vni: 4243, device: 'vlx-c0nf0004' },
    nat: true,
    subnet: {
      cidr: '10.233.0.0/24',
      gateway: '10.233.0.1',
      prefixLength: 24,
      dhcpStart: '10.233.0.100',
      dhcpEnd: '10.233.0.150',
      reservations: [],
    },
  };
  const vlan: NetworkConfig = {
    name: 'conf-vlan',
    mode: 'vlan',
    backend,
    bridge: 'vlb-c0nf0005',
    mtu: 1500,
    vlan: { id: 100, trunk: 'vltr0' },
    forwards: [],
  };
  return { nat, iso, vx, vxGw, vlan };
}
