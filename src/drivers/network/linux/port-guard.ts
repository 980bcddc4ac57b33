// Port security of VM ports (issue 8, hole 10) in the host's bridge-family table `bridge vmlink`: every frame a VM
// port sends passes its port's chain, which lets out only the NIC's MAC and its addresses (fixed ones, allowed ones,
// and the one a trusted DHCP server handed it), answers ARP only for them, and drops DHCP and router-advertisement
// servers. QEMU's announce after a migration (RARP, gratuitous ARP) carries the NIC's own MAC and address, so it passes.
// The same table marks every frame from a VM port (`GUEST_MARK`) so the inet input hook can filter what VMs send the
// host on a bridge that the host's own LAN traffic shares (host-input.ts).
//
// DHCP learning: a DHCP reply that reaches a port from the LAN (forward hook) or from the host's dnsmasq (output
// hook) adds `client MAC . your-address` (BOOTP chaddr and yiaddr, read as raw payload) to `dhcp_learned`; a VM
// port cannot send one (its chain drops server replies first). Entries expire after DHCP_LEARN_TIMEOUT unless renewed.
//
// Stateless by design: each frame is judged by its own headers, so it needs no nf_conntrack_bridge (absent on some
// kernels, present on Debian 12's) and behaves the same everywhere. A conntrack fast path (`ct state established
// accept` first) is deliberately not used: conntrack keys flows by addresses, not by port, so it would let a guest
// inject into another guest's established flows.
//
// Scripts are idempotent and each is one `nft -f` transaction: the base (table, sets, hooks) is re-declared every
// time (`add` of an existing object is a no-op; base chains are flushed and refilled), then ports are added or removed.
import { assertIfName } from '../../../exec/ip.js';
import { InvalidRequestError } from '../../../shared/errors.js';
import type { PortConfig } from '../types.js';
import {
  BRIDGE_TABLE,
  clearMaskHex,
  markHex,
  SG_BRIDGED_MARK,
  SG_EST_MARK,
  SG_RESTRICT_MARK,
} from './bridge-table.js';
import { GUEST_MARK_HEX } from './host-input.js';
import { dropPortSgLines, portSgLines, sgBaseLines } from './security-groups.js';

export { BRIDGE_TABLE } from './bridge-table.js';
/** How long an address learned from a DHCP reply stays allowed without a renewal. */
export const DHCP_LEARN_TIMEOUT = '7d';
/** Most learned DHCP addresses the table holds. */
export const DHCP_LEARN_MAX = 4096;

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Counter comments of a port's drops, by reason (tests and operators read these counters). */
export const portDropComment = (tap: string, why: 'mac' | 'dhcp server' | 'router advert' | 'address') =>
  `port:${tap} ${why}`;

// BOOTP fields as raw transport-header payload (bits): yiaddr at UDP payload byte 16, chaddr at byte 28.
const LEARN_KEY = '@th,288,48 . @th,192,32';
const LEARN = `udp sport 67 udp dport 68 update @dhcp_learned { ${LEARN_KEY} }`;

/** The base objects, re-declared by every script. */
function baseScript(): string[] {
  const t = BRIDGE_TABLE;
  return [
    `add table ${t}`,
    `add set ${t} vm_ports { type ifname; }`,
    `add map ${t} port_guards { type ifname : verdict; }`,
    `add set ${t} dhcp_learned { typeof ${LEARN_KEY}; size ${DHCP_LEARN_MAX}; flags dynamic,timeout; timeout ${DHCP_LEARN_TIMEOUT}; }`,
    `add chain ${t} prerouting { type filter hook prerouting priority filter; policy accept; }`,
    `add chain ${t} forward { type filter hook forward priority filter; policy accept; }`,
    `add chain ${t} output { type filter hook output priority filter; policy accept; }`,
    `flush chain ${t} prerouting`,
    // Security groups' marks start clear; frames the bridge switches get their bridge's conntrack zone (see
    // security-groups.ts). Both ahead of br_netfilter, which runs the inet hooks at bridge priority 0.
    `add rule ${t} prerouting meta mark set meta mark & ${clearMaskHex(SG_EST_MARK, SG_BRIDGED_MARK, SG_RESTRICT_MARK)}`,
    `add rule ${t} prerouting meta pkttype != host meta mark set meta mark | ${markHex(SG_BRIDGED_MARK)}`,
    `add rule ${t} prerouting iifname @vm_ports meta mark set meta mark | ${GUEST_MARK_HEX}`,
    `add rule ${t} prerouting iifname vmap @port_guards`,
    `flush chain ${t} forward`,
    `add rule ${t} forward ${LEARN}`,
    `flush chain ${t} output`,
    `add rule ${t} output ${LEARN}`,
    ...sgBaseLines(),
  ];
}

/** The rules of a guarded port's chain: its MAC, its addresses, no DHCP or RA server, everything else dropped. */
export function portGuardRules(tap: string, security: NonNullable<PortConfig['security']>): string[] {
  const mac = security.mac;
  if (!MAC.test(mac))
    throw new InvalidRequestError(`port ${tap}: ${JSON.stringify(mac)} is not a MAC address`, tap);
  for (const a of security.addresses)
    if (!IPV4.test(a))
      throw new InvalidRequestError(`port ${tap}: ${JSON.stringify(a)} is not an IPv4 address`, tap);
  const addrs = [...new Set(security.addresses)];
  const c = (why: Parameters<typeof portDropComment>[1]) => `comment "${portDropComment(tap, why)}"`;
  return [
    `ether saddr != ${mac} counter drop ${c('mac')}`,
    `udp sport { 67, 547 } counter drop ${c('dhcp server')}`,
    `icmpv6 type nd-router-advert counter drop ${c('router advert')}`,
    // ARP from its own MAC for its own addresses only (0.0.0.0: an address probe before DHCP completes).
    `arp saddr ether ${mac} arp saddr ip { ${['0.0.0.0', ...addrs].join(', ')} } accept`,
    `arp saddr ether ${mac} @nh,64,48 . @nh,112,32 @dhcp_learned accept`,
    ...(addrs.length ? [`ip saddr { ${addrs.join(', ')} } accept`] : []),
    `ether type ip @ll,48,48 . @nh,96,32 @dhcp_learned accept`,
    'ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept',
    // IPv6: link-local and unspecified (neighbour discovery, DAD) only; vmlink gives VMs no global IPv6.
    'ip6 saddr { ::, fe80::/10 } accept',
    // RARP: QEMU's announce after a migration.
    'ether type 0x8035 accept',
    `counter drop ${c('address')}`,
  ];
}

/** A DHCP lease the host's own dnsmasq holds: seeded into `dhcp_learned` so a running guest keeps its address. */
export interface LearnedLease {
  mac: string;
  ip: string;
}

/** `mac . ip` as the raw-payload key of `dhcp_learned` (hex integers). */
function learnedElement(l: LearnedLease): string | undefined {
  if (!MAC.test(l.mac) || !IPV4.test(l.ip)) return undefined;
  const ip = l.ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'));
  return `0x${l.mac.replaceAll(':', '')} . 0x${ip.join('')}`;
}

/**
 * The script that puts these ports in the table: every port marked, guarded ones through their own chain. `leases`:
 * current leases of the host's dnsmasq for these ports' MACs (a guard put on a running VM, after an upgrade or a
 * hot-plug, must not cut the address it got before: its next DHCP reply would only come at renewal).
 */
export function ensurePortsScript(
  ports: readonly PortConfig[],
  leases: readonly LearnedLease[] = [],
): string {
  const t = BRIDGE_TABLE;
  const lines = baseScript();
  const seeds = leases.flatMap((l) => learnedElement(l) ?? []);
  if (seeds.length) lines.push(`add element ${t} dhcp_learned { ${seeds.join(', ')} }`);
  for (const p of ports) {
    assertIfName(p.tap, 'tap');
    const chain = `port-${p.tap}`;
    lines.push(`add element ${t} vm_ports { "${p.tap}" }`, `add chain ${t} ${chain}`);
    if (p.security) {
      lines.push(`flush chain ${t} ${chain}`);
      for (const r of portGuardRules(p.tap, p.security)) lines.push(`add rule ${t} ${chain} ${r}`);
      lines.push(`add element ${t} port_guards { "${p.tap}" : jump ${chain} }`);
      lines.push(...portSgLines(p.tap, p.securityGroups));
    } else {
      // Groups trust the source addresses the guard enforces: none without it.
      if (p.securityGroups?.length)
        throw new InvalidRequestError(`port ${p.tap}: security groups need port security`, p.tap);
      // Unguarded (trunk, portSecurity: false): drop a guard (and groups) it may have had.
      lines.push(...dropGuard(p.tap), ...dropPortSgLines(p.tap));
    }
  }
  return `${lines.join('\n')}\n`;
}

/** The script that takes these ports out of the table (missing ones are fine). */
export function removePortsScript(taps: readonly string[]): string {
  const t = BRIDGE_TABLE;
  const lines = baseScript();
  for (const tap of taps) {
    assertIfName(tap, 'tap');
    lines.push(
      `add element ${t} vm_ports { "${tap}" }`,
      `delete element ${t} vm_ports { "${tap}" }`,
      `add chain ${t} port-${tap}`,
      ...dropGuard(tap),
      ...dropPortSgLines(tap),
    );
  }
  return `${lines.join('\n')}\n`;
}

/** Removes a port's guard whether or not it has one (declared first, so the deletes cannot fail). */
function dropGuard(tap: string): string[] {
  const t = BRIDGE_TABLE;
  const chain = `port-${tap}`;
  return [
    `add element ${t} port_guards { "${tap}" : jump ${chain} }`,
    `delete element ${t} port_guards { "${tap}" }`,
    `flush chain ${t} ${chain}`,
    `delete chain ${t} ${chain}`,
  ];
}
