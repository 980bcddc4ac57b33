// Network configs shared by this folder's unit tests.
import type { NetworkConfig } from '../../../shared/model.js';

/** A nat network with a reservation and two forwards, masqueraded out of eth0. */
export const natNet: NetworkConfig = {
  name: 'web',
  mode: 'nat',
  backend: 'linux',
  bridge: 'vlb-0a1b2c3d',
  mtu: 1500,
  uplink: 'eth0',
  subnet: {
    cidr: '10.10.0.0/24',
    gateway: '10.10.0.1',
    prefixLength: 24,
    dhcpStart: '10.10.0.100',
    dhcpEnd: '10.10.0.199',
    reservations: [{ mac: '52:54:00:12:34:56', ip: '10.10.0.10', hostname: 'web1' }],
  },
  forwards: [
    { protocol: 'tcp', hostPort: 8080, vm: 'web1', targetIp: '10.10.0.10', targetPort: 80 },
    { protocol: 'udp', hostPort: 5353, vm: 'web1', targetIp: '10.10.0.10', targetPort: 53 },
  ],
};

/** A nat network without an uplink (masquerades out of any other interface). */
export const natNoUplink: NetworkConfig = {
  name: 'apps',
  mode: 'nat',
  backend: 'linux',
  bridge: 'vlb-11112222',
  mtu: 1400,
  subnet: {
    cidr: '10.20.0.0/16',
    gateway: '10.20.0.1',
    prefixLength: 16,
    dhcpStart: '10.20.1.1',
    dhcpEnd: '10.20.1.200',
    reservations: [],
  },
  forwards: [],
};

/** An isolated network. */
export const isolatedNet: NetworkConfig = {
  name: 'backend',
  mode: 'isolated',
  backend: 'linux',
  bridge: 'vlb-33334444',
  mtu: 1500,
  subnet: {
    cidr: '172.16.5.0/24',
    gateway: '172.16.5.1',
    prefixLength: 24,
    dhcpStart: '172.16.5.50',
    dhcpEnd: '172.16.5.99',
    reservations: [],
  },
  forwards: [],
};

/** A bridge-mode network on eth0. */
export const bridgedNet: NetworkConfig = {
  name: 'lan',
  mode: 'bridge',
  backend: 'linux',
  bridge: 'vlb-55556666',
  mtu: 1500,
  uplink: 'eth0',
  forwards: [],
};

/** A vxlan overlay on host 2 of three (no subnet here: the bridge only switches frames). */
export const vxlanNet: NetworkConfig = {
  name: 'ov1',
  mode: 'vxlan',
  backend: 'linux',
  bridge: 'vlb-0f0f0001',
  mtu: 1450,
  vxlan: {
    vni: 1001,
    device: 'vlx-0f0f0001',
    local: '192.168.50.2',
    remotes: ['192.168.50.1', '192.168.50.3'],
    port: 4789,
    underlay: 'eth0',
  },
  forwards: [],
};

/** The same overlay on its NAT gateway host 1: address, DHCP and masquerade. */
export const vxlanGateway: NetworkConfig = {
  ...vxlanNet,
  vxlan: { ...vxlanNet.vxlan!, local: '192.168.50.1', remotes: ['192.168.50.2', '192.168.50.3'] },
  nat: true,
  subnet: {
    cidr: '10.20.0.0/24',
    gateway: '10.20.0.1',
    prefixLength: 24,
    dhcpStart: '10.20.0.100',
    dhcpEnd: '10.20.0.150',
    reservations: [],
  },
};

/** A vlan network (VLAN 100 on trunk eth1), gateway host without nat. */
export const vlanNet: NetworkConfig = {
  name: 'prod100',
  mode: 'vlan',
  backend: 'linux',
  bridge: 'vlb-0f0f0002',
  mtu: 1500,
  vlan: { id: 100, trunk: 'eth1' },
  subnet: {
    cidr: '10.100.0.0/24',
    gateway: '10.100.0.1',
    prefixLength: 24,
    dhcpStart: '10.100.0.100',
    dhcpEnd: '10.100.0.150',
    reservations: [],
  },
  forwards: [],
};

/** `ip -json -details link show` of a host's uplink eth0 (up, mtu 1500). */
export const eth0 = {
  ifindex: 2,
  ifname: 'eth0',
  flags: ['UP'],
  mtu: 1500,
  operstate: 'UP',
  address: '02:00:00:00:00:01',
};
