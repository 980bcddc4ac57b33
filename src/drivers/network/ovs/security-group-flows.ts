// Security groups (shared/security-groups.ts) on OVS bridges as OpenFlow with conntrack, in the shape of Neutron's
// native OVS firewall (egress tables, then "accept or ingress", then ingress tables), written for vmlink's bridges:
//
//   table 0   anti-spoofing and VLAN policy (flows.ts, port-guard.ts); on a bridge with grouped ports, what a grouped
//             port may send goes to table 10, every other accepted frame to table 20 (instead of NORMAL).
//   table 10  egress of a grouped port: DHCP requests and ARP/RARP pass to 20, IPv4 goes through ct(zone) to 11,
//             IPv6 is neighbour discovery only when the port's groups restrict egress.
//   table 11  egress verdict: +inv drops, +est/+rel pass, +new passes (and is committed) when the port has no egress
//             rules or one matches; the rest hits the port's own drop flow (priority 1: its counter). Passing means table 20: the receiver may be grouped too.
//   table 20  dispatch by destination MAC: IPv4 to a grouped port goes through ct(its zone) to 21, DHCP replies and
//             neighbour discovery pass, other IPv6 to it drops; everything else is NORMAL switching.
//   table 21  ingress verdict: +inv drops, +est/+rel pass, +new passes (and is committed) when an ingress rule of
//             the receiver's groups matches; the rest hits the receiver's own drop flow (priority 1: its counter).
//
// One conntrack zone per grouped port (not per network): two grouped ports on one bridge each keep their own
// connections, so a connection A allowed out of its port is still checked against B's ingress rules (a shared zone
// would see it +est there). The zone is allocated when the port is attached and kept in its external_ids.
//
// Ingress is found by destination MAC, as Neutron does: unicast frames to the port's MAC. Broadcast and multicast
// IPv4 (other than DHCP) is switched by NORMAL to every port of the VLAN, grouped or not: OpenFlow cannot see where
// NORMAL floods a frame, so those frames are not filtered per port (documented in docs/security.md).
//
// Remote groups: one flow per member MAC (times the rule's port matches), not conjunctive matches. That is
// members x port-matches flows per rule and receiving port; `flowCount` lets the driver refuse a group whose flows
// would pass SECURITY_GROUP_FLOWS_MAX on one bridge instead of loading them.
//
// Every flow a rule makes carries its group's cookie (`groupCookie`), so the flows of one group can be found in a
// dump; the driver replaces the whole table in one OpenFlow bundle, which changes only flows that differ.
import { createHash } from 'node:crypto';
import type { SecurityGroupConfig, SecurityGroupRuleConfig } from '../../../shared/security-groups.js';

/** Tables of the security group pipeline. */
export const SG_TABLE = { egress: 10, egressCt: 11, dispatch: 20, ingressCt: 21 } as const;

/** Most flows the security groups of one bridge may make (beyond it ensureSecurityGroup refuses). */
export const SECURITY_GROUP_FLOWS_MAX = 200_000;

/** First conntrack zone of grouped ports (above the small numbers other users of zones pick). */
export const CT_ZONE_MIN = 0x4000;
/** Last conntrack zone (zones are 16 bits). */
export const CT_ZONE_MAX = 0xffff;

/** Action that sends a frame on to the dispatch table. */
export const TO_DISPATCH = `resubmit(,${SG_TABLE.dispatch})`;
/** Action that sends a frame of a grouped port to its egress table. */
export const TO_EGRESS = `resubmit(,${SG_TABLE.egress})`;

// ICMPv6 neighbour discovery a grouped port may send and receive (router and neighbour solicitation and advert; the
// guard drops router adverts from VM ports).
const ND_TYPES = [133, 134, 135, 136];

/** A grouped port as the flow builder needs it. */
export interface GroupedPort {
  ofport: number;
  /** The port's MAC (its guard's): how ingress finds it. */
  mac: string;
  /** Its conntrack zone. */
  zone: number;
  /** Its groups, by name. */
  groups: readonly string[];
}

/** A flow without cookie: `[table, priority, match, actions]`. */
type Flow = [number, number, string, string];

const hex8 = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 8);

/** Cookie of a group's rule flows: 32 bits of the name's hash above vmlink's cookie (`vlnk`). */
export const groupCookie = (name: string): string => `0x${hex8(name)}766c6e6b`;

/**
 * A port range as OpenFlow value/mask matches (the fewest aligned power-of-two blocks covering it); a single
 * port is one exact match.
 */
export function portRangeMatches(from: number, to: number): string[] {
  const out: string[] = [];
  let lo = from;
  while (lo <= to) {
    let size = 1;
    // Grow the block while it stays aligned at `lo` and inside the range.
    while (size < 0x10000 && lo % (size * 2) === 0 && lo + size * 2 - 1 <= to) size *= 2;
    out.push(size === 1 ? `${lo}` : `0x${lo.toString(16)}/0x${(0xffff - size + 1).toString(16)}`);
    lo += size;
  }
  return out;
}

/** The protocol part of a rule's match. */
const protoMatch = (r: SecurityGroupRuleConfig): string => (r.protocol === 'any' ? 'ip' : r.protocol);

/**
 * The matches (without direction and port parts) a rule makes: protocol x destination ports x remote. A remote
 * group that is unknown here or has no members makes none (it matches nothing).
 */
export function ruleMatches(
  r: SecurityGroupRuleConfig,
  groups: ReadonlyMap<string, SecurityGroupConfig>,
): string[] {
  const proto = protoMatch(r);
  const ports =
    r.ports && (r.protocol === 'tcp' || r.protocol === 'udp')
      ? r.ports.flatMap((p) => portRangeMatches(p.from, p.to).map((m) => `tp_dst=${m}`))
      : [''];
  let remotes: string[] = [''];
  const ingress = r.direction === 'ingress';
  if (r.group !== undefined) {
    const macs = groups.get(r.group)?.memberMacs ?? [];
    remotes = macs.map((m) => `${ingress ? 'dl_src' : 'dl_dst'}=${m}`);
  } else if (r.cidr !== undefined && !r.cidr.endsWith('/0')) {
    remotes = [`${ingress ? 'nw_src' : 'nw_dst'}=${r.cidr}`];
  }
  const out: string[] = [];
  for (const remote of remotes)
    for (const port of ports) out.push([proto, remote, port].filter(Boolean).join(','));
  return out;
}

/** The egress and ingress rules of a port's groups (groups not known here contribute none). */
function rulesOf(p: GroupedPort, groups: ReadonlyMap<string, SecurityGroupConfig>) {
  const known = p.groups.map((g) => groups.get(g)).filter((g) => g !== undefined);
  return {
    ingress: known.flatMap((g) => g.rules.filter((r) => r.direction === 'ingress').map((r) => ({ g, r }))),
    egress: known.flatMap((g) => g.rules.filter((r) => r.direction === 'egress').map((r) => ({ g, r }))),
  };
}

/** How many flows the rules of `group` make on a port in it (for the size check before loading it). */
export function flowCount(
  group: SecurityGroupConfig,
  groups: ReadonlyMap<string, SecurityGroupConfig>,
): number {
  return group.rules.reduce((n, r) => n + ruleMatches(r, groups).length, 0);
}

/**
 * The security group flows of a bridge's grouped ports (tables 10-21), each as `cookie=...,table=...` flow text.
 * `cookie` is vmlink's bridge cookie for the per-port and per-table flows; rule flows carry their group's cookie.
 * Empty when no port has groups (the bridge then keeps plain NORMAL switching).
 */
export function securityGroupFlows(
  ports: readonly GroupedPort[],
  groups: ReadonlyMap<string, SecurityGroupConfig>,
  cookie: string,
): string[] {
  if (ports.length === 0) return [];
  const T = SG_TABLE;
  const base: Flow[] = [];
  const rules: Array<[string, Flow]> = [];
  for (const p of ports) {
    const inp = `in_port=${p.ofport}`;
    const dst = `dl_dst=${p.mac}`;
    // No usable zone (a hand-edited database): the port passes nothing rather than everything.
    if (!Number.isInteger(p.zone) || p.zone < CT_ZONE_MIN || p.zone > CT_ZONE_MAX) {
      base.push([T.egress, 10, inp, 'drop'], [T.dispatch, 200, dst, 'drop']);
      continue;
    }
    const commit = `ct(commit,zone=${p.zone})`;
    const { ingress, egress } = rulesOf(p, groups);
    // Egress: DHCP requests and non-IP (ARP, RARP) pass; IPv4 is tracked in the port's zone.
    base.push(
      [T.egress, 300, `${inp},udp,tp_src=68,tp_dst=67`, TO_DISPATCH],
      [T.egress, 200, `${inp},ip`, `ct(table=${T.egressCt},zone=${p.zone})`],
    );
    if (egress.length) {
      for (const t of ND_TYPES) base.push([T.egress, 160, `${inp},icmp6,icmp_type=${t}`, TO_DISPATCH]);
      base.push([T.egress, 150, `${inp},ipv6`, 'drop']);
    }
    base.push([T.egress, 10, inp, TO_DISPATCH]);
    if (egress.length === 0)
      base.push([T.egressCt, 100, `ct_state=+new+trk,${inp},ip`, `${commit},${TO_DISPATCH}`]);
    // The port's own drops (their n_packets: what its groups stopped, per direction).
    base.push([T.egressCt, 1, inp, 'drop'], [T.ingressCt, 1, dst, 'drop']);
    for (const { g, r } of egress)
      for (const m of ruleMatches(r, groups))
        rules.push([g.name, [T.egressCt, 100, `ct_state=+new+trk,${inp},${m}`, `${commit},${TO_DISPATCH}`]]);
    // Ingress: found by destination MAC.
    base.push(
      [T.dispatch, 300, `${dst},udp,tp_src=67,tp_dst=68`, 'NORMAL'],
      [T.dispatch, 200, `${dst},ip`, `ct(table=${T.ingressCt},zone=${p.zone})`],
      ...ND_TYPES.map((t): Flow => [T.dispatch, 160, `${dst},icmp6,icmp_type=${t}`, 'NORMAL']),
      [T.dispatch, 150, `${dst},ipv6`, 'drop'],
    );
    for (const { g, r } of ingress)
      for (const m of ruleMatches(r, groups))
        rules.push([g.name, [T.ingressCt, 100, `ct_state=+new+trk,${dst},${m}`, `${commit},NORMAL`]]);
  }
  // Per-table verdicts shared by every grouped port (only their traffic reaches tables 11 and 21).
  for (const [t, pass] of [
    [T.egressCt, TO_DISPATCH],
    [T.ingressCt, 'NORMAL'],
  ] as const)
    base.push(
      [t, 300, 'ct_state=+inv+trk', 'drop'],
      [t, 200, 'ct_state=-new+est+trk', pass],
      [t, 200, 'ct_state=-new+rel+trk', pass],
      [t, 0, '', 'drop'],
    );
  base.push([T.egress, 0, '', 'drop'], [T.dispatch, 0, '', 'NORMAL']);
  // Two groups of a port may make the same match (OpenFlow holds one flow per table, priority and match): the
  // first stays. The same goes for two ports with one MAC (a hand-edited database).
  const seen = new Set<string>();
  const out: string[] = [];
  for (const [c, [t, prio, match, actions]] of [
    ...base.map((f): [string, Flow] => [cookie, f]),
    ...rules.map(([g, f]): [string, Flow] => [groupCookie(g), f]),
  ]) {
    const key = `${t}/${prio}/${match}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(`cookie=${c},table=${t},priority=${prio}${match ? `,${match}` : ''},actions=${actions}`);
  }
  return out;
}
