// Port security of VM ports on OVS bridges (issue 8, hole 10), as OpenFlow: a guarded port lets out only frames from
// its MAC carrying its IPv4 addresses, ARP only with its own MAC and addresses, RARP (QEMU's announce after a
// migration) and IPv6 link-local traffic (neighbour discovery); it sends no DHCP server replies and no router
// adverts. Everything else from the port hits its drop flow, whose n_packets counts what was stopped.
//
// Which addresses: the port's fixed address and `allowedAddresses` (PortConfig.security), plus, for a NIC that takes
// its address by DHCP, its reservation on this host's vmlink DHCP (dnsmasq `dhcp-host`, which gives that MAC only
// that address). OpenFlow cannot read a DHCP reply's yiaddr (nor can `learn()`: it copies header fields, not BOOTP
// payload), so a DHCP NIC with no reservation known here (a pool address, or a member host of an overlay whose DHCP
// runs on the gateway host) is pinned to its MAC only: its IPv4 source is not checked. The linux backend learns such
// addresses from the DHCP reply instead (linux/port-guard.ts).
//
// The flows sit above the bridge's VLAN policy (flows.ts): allowed untagged frames go to NORMAL at priority 400, the
// policy's tagged-frame drop (300) stays, and the port's catch-all drop (250) is above its NORMAL (200).
import { InvalidRequestError } from '../../../shared/errors.js';
import type { PortConfig } from '../types.js';

/** What a guarded port may send: its MAC and its IPv4 sources (undefined: the source address is not checked). */
export interface PortGuard {
  mac: string;
  addresses?: string[];
}

/** Priority of a guarded port's allow flows (above the VLAN policy's drops). */
export const GUARD_ALLOW_PRIORITY = 400;
/** Priority of the flows that drop DHCP server replies and router adverts from a guarded port. */
export const GUARD_SERVER_DROP_PRIORITY = 450;
/** Priority of a guarded port's catch-all drop: its n_packets counts what the guard stopped. */
export const GUARD_DROP_PRIORITY = 250;

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Whether `s` is a lowercase MAC address as vmlink writes them. */
export const isGuardMac = (s: string): boolean => MAC.test(s);
/** Whether `s` is a dotted IPv4 address. */
export const isGuardIpv4 = (s: string): boolean => IPV4.test(s);

/** Refuses a port security setting the flows could not express safely, naming the port. */
export function validatePortSecurity(tap: string, security: NonNullable<PortConfig['security']>): void {
  if (!MAC.test(security.mac))
    throw new InvalidRequestError(`port ${tap}: ${JSON.stringify(security.mac)} is not a MAC address`, tap);
  for (const a of security.addresses)
    if (!IPV4.test(a))
      throw new InvalidRequestError(`port ${tap}: ${JSON.stringify(a)} is not an IPv4 address`, tap);
}

/**
 * The guard of a port from what ensurePort recorded: fixed and allowed addresses, and for a DHCP NIC its
 * reservations here (`reserved`); a DHCP NIC with none is pinned to its MAC only. Invalid entries are dropped.
 */
export function resolveGuard(
  mac: string,
  addresses: readonly string[],
  dhcp: boolean,
  reserved: readonly string[],
): PortGuard {
  const fixed = addresses.filter(isGuardIpv4);
  if (dhcp && reserved.length === 0) return { mac };
  return { mac, addresses: [...new Set([...fixed, ...(dhcp ? reserved.filter(isGuardIpv4) : [])])].sort() };
}

/**
 * The flows (without cookie) of a guarded port: `[priority, match, actions]`, match starting at in_port. `accept`:
 * what allowed frames do (NORMAL; a port with security groups goes on to its egress table).
 */
export function guardFlows(ofport: number, g: PortGuard, accept = 'NORMAL'): Array<[number, string, string]> {
  const inp = `in_port=${ofport}`;
  const drop: [number, string, string] = [GUARD_DROP_PRIORITY, inp, 'drop'];
  // A MAC that is not one (a hand-edited database): the port sends nothing.
  if (!MAC.test(g.mac)) return [drop];
  const from = `${inp},dl_src=${g.mac},vlan_tci=0x0000/0x1000`;
  const allow = (m: string): [number, string, string] => [GUARD_ALLOW_PRIORITY, `${from},${m}`, accept];
  const out: Array<[number, string, string]> = [
    [GUARD_SERVER_DROP_PRIORITY, `${inp},udp,tp_src=67`, 'drop'],
    [GUARD_SERVER_DROP_PRIORITY, `${inp},udp6,tp_src=547`, 'drop'],
    [GUARD_SERVER_DROP_PRIORITY, `${inp},icmp6,icmp_type=134`, 'drop'],
  ];
  if (g.addresses) {
    // 0.0.0.0: an address probe (RFC 5227) before DHCP completes.
    for (const a of ['0.0.0.0', ...g.addresses]) out.push(allow(`arp,arp_spa=${a},arp_sha=${g.mac}`));
    for (const a of g.addresses) out.push(allow(`ip,nw_src=${a}`));
  } else {
    out.push(allow(`arp,arp_sha=${g.mac}`), allow('ip'));
  }
  out.push(
    // DHCP discovery and requests before the guest has an address.
    allow('udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,tp_src=68,tp_dst=67'),
    // IPv6: unspecified and link-local only (neighbour discovery, DAD); vmlink gives VMs no global IPv6.
    allow('ipv6,ipv6_src=::'),
    allow('ipv6,ipv6_src=fe80::/10'),
    // RARP: QEMU's announce after a migration, from the NIC's own MAC.
    allow('dl_type=0x8035'),
    drop,
  );
  return out;
}
