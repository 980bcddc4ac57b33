// Names and labels of what the OVS backend creates: device names that fit 15 characters, and the
// external_ids keys that mark vmlink's bridges and ports in the OVS database.
import { createHash } from 'node:crypto';
import type { OvsBridge, OvsPort } from '../../../exec/ovs.js';

/** Longest Linux interface name (IFNAMSIZ - 1). */
const IFNAME_MAX = 15;

/** external_ids key naming what a bridge or port is to vmlink (trunk, tunnel, gateway, vm, underlay). */
export const ROLE = 'vmlink-role';
/** external_ids key naming the network a port belongs to. */
export const NET = 'vmlink-net';
/** external_ids key: the access VLAN `ensurePort` asked for ('' for none). */
export const WANT_TAG = 'vmlink-tag';
/** external_ids key: the trunk VLANs `ensurePort` asked for, joined by '-' ('' for none). */
export const WANT_TRUNKS = 'vmlink-trunks';

/** external_ids key: the MAC a guarded VM port may send from ('' for an unguarded port). */
export const GUARD_MAC = 'vmlink-guard-mac';
/** external_ids key: the fixed and allowed IPv4 addresses of a guarded VM port, joined by '_'. */
export const GUARD_IPS = 'vmlink-guard-ips';
/** external_ids key: '1' when a guarded VM port's NIC takes its address by DHCP. */
export const GUARD_DHCP = 'vmlink-guard-dhcp';

/** external_ids key prefix of a VM port's security groups: `vmlink-sg-0` .. `vmlink-sg-7`, one name each ('' unused). */
export const SG_KEY_PREFIX = 'vmlink-sg-';
/** external_ids key: the conntrack zone of a VM port with security groups ('' without). */
export const CT_ZONE = 'vmlink-ct-zone';

const hex8 = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 8);

/**
 * `<prefix><key>` when it fits in 15 characters, else `<prefix>` + 8 hex of sha256(key). A key that looks like 8
 * hex digits is hashed too, so a readable name never equals another key's hashed one.
 */
const readableOr = (prefix: string, key: string): string => {
  const readable = `${prefix}${key}`;
  return readable.length <= IFNAME_MAX && !/^[0-9a-f]{8}$/.test(key) ? readable : `${prefix}${hex8(key)}`;
};

/** OVS bridge holding the underlay NIC and the VTEP address (userspace datapath only): `vlu-<nic>`. */
export const underlayBridgeName = (nic: string): string => readableOr('vlu-', nic);
/** The underlay bridge name before readable names (`vlu-` + hash): kept where a host has it. */
export const legacyUnderlayBridgeName = (nic: string): string => `vlu-${hex8(nic)}`;
/** Internal port carrying a vlan/vxlan network's gateway address (gateway host only): `vli-<network>`. */
export const gatewayPortName = (network: string): string => readableOr('vli-', network);
/** The gateway port name before readable names (`vli-` + hash): kept where a host has it. */
export const legacyGatewayPortName = (network: string): string => `vli-${hex8(network)}`;
/** Tunnel port of a vxlan network towards one remote VTEP (<= 15 chars). */
export const tunnelPortName = (device: string, remote: string): string =>
  `${device.slice(0, 8)}-${hex8(remote).slice(0, 6)}`;

/**
 * The gateway port a network has in OVS (found by its labels, so a port made under the legacy name keeps
 * serving), else the name a new one gets.
 */
export function gatewayPortOf(ports: OvsPort[], network: string): string {
  const have = ports.find((p) => p.externalIds[ROLE] === 'gateway' && p.externalIds[NET] === network);
  return have?.name ?? gatewayPortName(network);
}

/** The underlay bridge of `nic`: the legacy-named one where OVS has it (it keeps the VTEP address), else the new name. */
export function underlayBridgeOf(bridges: OvsBridge[], nic: string): string {
  const legacy = legacyUnderlayBridgeName(nic);
  return bridges.some((b) => b.name === legacy && b.externalIds[ROLE] === 'underlay')
    ? legacy
    : underlayBridgeName(nic);
}
