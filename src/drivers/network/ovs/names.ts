// Names and labels of what the OVS backend creates: device names that fit 15 characters, and the
// external_ids keys that mark vmlink's bridges and ports in the OVS database.
import { createHash } from 'node:crypto';

/** external_ids key naming what a bridge or port is to vmlink (trunk, tunnel, gateway, vm, underlay). */
export const ROLE = 'vmlink-role';
/** external_ids key naming the network a port belongs to. */
export const NET = 'vmlink-net';
/** external_ids key: the access VLAN `ensurePort` asked for ('' for none). */
export const WANT_TAG = 'vmlink-tag';
/** external_ids key: the trunk VLANs `ensurePort` asked for, joined by '-' ('' for none). */
export const WANT_TRUNKS = 'vmlink-trunks';

const hex8 = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 8);

/** OVS bridge holding the underlay NIC and the VTEP address (userspace datapath only). */
export const underlayBridgeName = (nic: string): string => `vlu-${hex8(nic)}`;
/** Internal port carrying a vlan/vxlan network's gateway address (gateway host only). */
export const gatewayPortName = (network: string): string => `vli-${hex8(network)}`;
/** Tunnel port of a vxlan network towards one remote VTEP (<= 15 chars). */
export const tunnelPortName = (device: string, remote: string): string =>
  `${device.slice(0, 8)}-${hex8(remote).slice(0, 6)}`;
