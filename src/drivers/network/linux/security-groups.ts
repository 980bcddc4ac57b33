// Security groups (issue 9) in vmlink's bridge-family table; semantics in shared/security-groups.ts.
//
// Shape (every name keyed so that one group's change touches only its own objects):
// - per group: `sg-<g>-members` (its members' MACs, what remote-group rules of any group match), `sg-<g>-in` and
//   `sg-<g>-out` (its rules; a match accepts). A group with egress rules ends `sg-<g>-out` by setting
//   SG_RESTRICT_MARK: the port then drops what no egress rule of any of its groups let out.
// - per port with groups: `sgp-in-<tap>` (frames delivered to it) and `sgp-out-<tap>` (frames it sends), reached
//   through the maps `sg_ingress` (oifname) and `sg_egress` (iifname) from base chains on the forward and output
//   hooks (ingress) and forward and input hooks (egress). Each port chain accepts established/related traffic, ARP,
//   neighbour discovery and DHCP, jumps to each of its groups' chains, then drops with a counter (`sg:<tap> ...`).
//   Egress and ingress sit in base chains of different priorities, so an accept on the way out still meets the
//   receiving port's ingress chain.
// - Statefulness: the bridge family has no `ct` without nf_conntrack_bridge, so the inet table (ruleset.ts, chains
//   `sg_zone` and `sg_state`) reads conntrack — br_netfilter hands bridged IPv4 to its prerouting hook before the
//   bridge forward hook — and sets SG_EST_MARK on established/related packets. Switched frames (SG_BRIDGED_MARK,
//   set in bridge prerouting) are tracked in a conntrack zone per bridge, so flows of two bridges with overlapping
//   subnets never answer for each other. Needs bridge-nf-call-iptables=1 (checked before a group is applied).
// - Port guards (port-guard.ts) run first, in bridge prerouting: groups trust the source MAC and address they let out.
//
// Every script is one `nft -f` transaction and idempotent; builders are pure (golden-tested).
import { assertIfName } from '../../../exec/ip.js';
import { InvalidRequestError } from '../../../shared/errors.js';
import { PORT_MAX, PORT_MIN } from '../../../shared/limits.js';
import {
  NIC_SECURITY_GROUPS_MAX,
  RULE_PORTS_MAX,
  type RuleDirection,
  SECURITY_GROUP_MEMBERS_MAX,
  SECURITY_GROUP_RULES_MAX,
  type SecurityGroupConfig,
  type SecurityGroupRuleConfig,
} from '../../../shared/security-groups.js';
import { BRIDGE_TABLE, clearMaskHex, markHex, SG_EST_MARK, SG_RESTRICT_MARK } from './bridge-table.js';

/** Counter comment of a port's security-group drops (tests and operators read these counters). */
export const sgDropComment = (tap: string, direction: RuleDirection): string => `sg:${tap} ${direction} drop`;

const GROUP_NAME = /^[a-z][a-z0-9-]{0,30}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

const dirTag = (d: RuleDirection) => (d === 'ingress' ? 'in' : 'out');
/** A group's rule chain for one direction. */
export const groupChain = (group: string, d: RuleDirection): string => `sg-${group}-${dirTag(d)}`;
/** A group's member MAC set. */
export const membersSet = (group: string): string => `sg-${group}-members`;
/** A port's security-group chain for one direction. */
export const portSgChain = (tap: string, d: RuleDirection): string => `sgp-${dirTag(d)}-${tap}`;

function groupName(name: string, what: string): string {
  if (!GROUP_NAME.test(name))
    throw new InvalidRequestError(`${what}: ${JSON.stringify(name)} is not a security group name`, what);
  return name;
}

/** `a.b.c.d/len` with the host bits cleared (nftables wants the network), or an error naming the rule. */
function network(cidr: string, what: string): string {
  const [ip, len, ...rest] = cidr.split('/');
  if (rest.length || !ip || !IPV4.test(ip) || !len || !/^\d{1,2}$/.test(len) || Number(len) > 32)
    throw new InvalidRequestError(`${what}: ${JSON.stringify(cidr)} is not an IPv4 CIDR`, what);
  const bits = Number(len);
  const n = ip.split('.').reduce((a, o) => (a << 8) | Number(o), 0) >>> 0;
  const masked = bits === 0 ? 0 : (n & (~0 << (32 - bits))) >>> 0;
  return `${[24, 16, 8, 0].map((s) => (masked >>> s) & 0xff).join('.')}/${bits}`;
}

function portList(ports: SecurityGroupRuleConfig['ports'], what: string): string {
  if (!ports || ports.length === 0) return '';
  if (ports.length > RULE_PORTS_MAX)
    throw new InvalidRequestError(`${what}: more than ${RULE_PORTS_MAX} ports`, what);
  const items = ports.map(({ from, to }) => {
    for (const p of [from, to])
      if (!Number.isInteger(p) || p < PORT_MIN || p > PORT_MAX)
        throw new InvalidRequestError(`${what}: port ${p} out of range ${PORT_MIN}-${PORT_MAX}`, what);
    if (from > to) throw new InvalidRequestError(`${what}: port range ${from}-${to} is reversed`, what);
    return from === to ? `${from}` : `${from}-${to}`;
  });
  return ` { ${items.join(', ')} }`;
}

/** One rule as an nftables rule of its group's chain (a match accepts). */
export function ruleStatement(r: SecurityGroupRuleConfig, what: string): string {
  const ingress = r.direction === 'ingress';
  if (r.direction !== 'ingress' && r.direction !== 'egress')
    throw new InvalidRequestError(`${what}: direction ${JSON.stringify(r.direction)}`, what);
  if (r.cidr !== undefined && r.group !== undefined)
    throw new InvalidRequestError(`${what}: a rule has a remote cidr or a remote group, not both`, what);
  const parts: string[] = [];
  switch (r.protocol) {
    case 'tcp':
    case 'udp':
      parts.push(`ip protocol ${r.protocol}`);
      break;
    case 'icmp':
      if (r.ports?.length) throw new InvalidRequestError(`${what}: icmp has no ports`, what);
      parts.push('ip protocol icmp');
      break;
    case 'any':
      if (r.ports?.length) throw new InvalidRequestError(`${what}: ports need tcp or udp`, what);
      parts.push('ether type ip');
      break;
    default:
      throw new InvalidRequestError(`${what}: protocol ${JSON.stringify(r.protocol)}`, what);
  }
  // The remote is the source of what comes in, the destination of what goes out.
  if (r.cidr !== undefined) parts.push(`ip ${ingress ? 'saddr' : 'daddr'} ${network(r.cidr, what)}`);
  if (r.group !== undefined)
    parts.push(`ether ${ingress ? 'saddr' : 'daddr'} @${membersSet(groupName(r.group, what))}`);
  const ports = portList(r.ports, what);
  if (ports) parts.push(`${r.protocol} dport${ports}`);
  parts.push('accept');
  return parts.join(' ');
}

/** The rules of a group's chain for one direction (an egress chain with rules ends by restricting the port). */
export function groupChainRules(g: SecurityGroupConfig, d: RuleDirection): string[] {
  const rules = g.rules
    .map((r, i) => [r, i] as const)
    .filter(([r]) => r.direction === d)
    .map(([r, i]) => ruleStatement(r, `securityGroups.${g.name}.rules[${i}]`));
  if (d === 'egress' && rules.length) rules.push(`meta mark set meta mark | ${markHex(SG_RESTRICT_MARK)}`);
  return rules;
}

function checkGroup(g: SecurityGroupConfig): void {
  const what = `securityGroups.${g.name}`;
  groupName(g.name, 'securityGroups');
  if (g.rules.length > SECURITY_GROUP_RULES_MAX)
    throw new InvalidRequestError(`${what}: more than ${SECURITY_GROUP_RULES_MAX} rules`, what);
  if (g.memberMacs.length > SECURITY_GROUP_MEMBERS_MAX)
    throw new InvalidRequestError(`${what}: more than ${SECURITY_GROUP_MEMBERS_MAX} members`, what);
  for (const m of g.memberMacs)
    if (!MAC.test(m))
      throw new InvalidRequestError(`${what}: member ${JSON.stringify(m)} is not a MAC address`, what);
}

/**
 * The objects every port script declares after the table (no-ops when present): the port maps and the base chains
 * that consult them. Ingress runs after egress (a higher priority) on the forward hook; both after the port guards'
 * learning rules (priority filter).
 */
export function sgBaseLines(): string[] {
  const t = BRIDGE_TABLE;
  const base: Array<[string, string, string]> = [
    ['sg_out_forward', 'forward priority filter + 10', 'iifname vmap @sg_egress'],
    ['sg_out_input', 'input priority filter + 10', 'iifname vmap @sg_egress'],
    ['sg_in_forward', 'forward priority filter + 20', 'oifname vmap @sg_ingress'],
    ['sg_in_output', 'output priority filter + 20', 'oifname vmap @sg_ingress'],
  ];
  return [
    `add map ${t} sg_ingress { type ifname : verdict; }`,
    `add map ${t} sg_egress { type ifname : verdict; }`,
    ...base.flatMap(([chain, hook, rule]) => [
      `add chain ${t} ${chain} { type filter hook ${hook}; policy accept; }`,
      `flush chain ${t} ${chain}`,
      `add rule ${t} ${chain} ${rule}`,
    ]),
  ];
}

/** Declares a group's objects (empty when new: a group named before it is ensured allows nothing). */
function declareGroup(name: string): string[] {
  const t = BRIDGE_TABLE;
  return [
    `add set ${t} ${membersSet(name)} { type ether_addr; size ${SECURITY_GROUP_MEMBERS_MAX}; }`,
    `add chain ${t} ${groupChain(name, 'ingress')}`,
    `add chain ${t} ${groupChain(name, 'egress')}`,
  ];
}

const elements = (macs: readonly string[]) => `{ ${macs.join(', ')} }`;

/**
 * The script that applies group `g`: its two chains flushed and refilled, its members set brought to `g.memberMacs`.
 * With `prev` (what was applied before) the set changes by its difference; without, it is flushed and refilled.
 * Groups named by its rules are declared (empty) so the rules load before those groups are ensured.
 */
export function ensureGroupScript(g: SecurityGroupConfig, prev?: SecurityGroupConfig): string {
  checkGroup(g);
  const t = BRIDGE_TABLE;
  // Only its own objects (the base chains come with the ports that need them).
  const lines = [`add table ${t}`];
  const remotes = [...new Set(g.rules.flatMap((r) => (r.group === undefined ? [] : [r.group])))].filter(
    (r) => r !== g.name,
  );
  for (const r of [g.name, ...remotes.sort()])
    lines.push(...declareGroup(groupName(r, `securityGroups.${g.name}`)));
  for (const d of ['ingress', 'egress'] as const) {
    const chain = groupChain(g.name, d);
    lines.push(`flush chain ${t} ${chain}`);
    for (const r of groupChainRules(g, d)) lines.push(`add rule ${t} ${chain} ${r}`);
  }
  const set = membersSet(g.name);
  const want = [...new Set(g.memberMacs)].sort();
  if (prev) {
    const have = new Set(prev.memberMacs);
    const keep = new Set(want);
    const gone = [...have].filter((m) => !keep.has(m)).sort();
    const added = want.filter((m) => !have.has(m));
    if (gone.length) lines.push(`delete element ${t} ${set} ${elements(gone)}`);
    if (added.length) lines.push(`add element ${t} ${set} ${elements(added)}`);
  } else {
    lines.push(`flush set ${t} ${set}`);
    if (want.length) lines.push(`add element ${t} ${set} ${elements(want)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The script that removes a group (missing is fine); it fails while a port's chain or another group still uses it. */
export function deleteGroupScript(name: string): string {
  groupName(name, 'securityGroups');
  const t = BRIDGE_TABLE;
  return `${[
    `add table ${t}`,
    ...declareGroup(name),
    `delete chain ${t} ${groupChain(name, 'ingress')}`,
    `delete chain ${t} ${groupChain(name, 'egress')}`,
    `delete set ${t} ${membersSet(name)}`,
  ].join('\n')}\n`;
}

/** The fallback of `deleteGroupScript` while something still refers to the group: it empties it (allows nothing). */
export function emptyGroupScript(name: string): string {
  groupName(name, 'securityGroups');
  const t = BRIDGE_TABLE;
  return `${[
    `add table ${t}`,
    ...declareGroup(name),
    `flush chain ${t} ${groupChain(name, 'ingress')}`,
    `flush chain ${t} ${groupChain(name, 'egress')}`,
    `flush set ${t} ${membersSet(name)}`,
  ].join('\n')}\n`;
}

/** The rules of a port's chain for one direction, jumping to each of its groups' chains. */
export function portSgRules(tap: string, groups: readonly string[], d: RuleDirection): string[] {
  const est = markHex(SG_EST_MARK);
  const restrict = markHex(SG_RESTRICT_MARK);
  const drop = `counter drop comment "${sgDropComment(tap, d)}"`;
  const jumps = groups.map((g) => `jump ${groupChain(g, d)}`);
  if (d === 'ingress')
    return [
      `meta mark & ${est} == ${est} accept`,
      'ether type arp accept',
      'icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept',
      'udp sport 67 udp dport 68 accept',
      ...jumps,
      drop,
    ];
  return [
    // The restrict bit is this chain's own: start from clear, whatever an earlier hook left.
    `meta mark set meta mark & ${clearMaskHex(SG_RESTRICT_MARK)}`,
    `meta mark & ${est} == ${est} accept`,
    'ether type arp accept',
    'icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept',
    'udp sport 68 udp dport 67 accept',
    ...jumps,
    `meta mark & ${restrict} == ${restrict} ${drop}`,
  ];
}

/**
 * The lines that give a port its security-group chains (after the base lines), or take them away when it has no
 * groups. Groups not yet ensured are declared empty: the port is default-deny inbound until they are.
 */
export function portSgLines(tap: string, groups: readonly string[] | undefined): string[] {
  assertIfName(tap, 'tap');
  const list = [...new Set(groups ?? [])];
  if (list.length === 0) return dropPortSgLines(tap);
  if (list.length > NIC_SECURITY_GROUPS_MAX)
    throw new InvalidRequestError(`port ${tap}: more than ${NIC_SECURITY_GROUPS_MAX} security groups`, tap);
  for (const g of list) groupName(g, `port ${tap}`);
  const t = BRIDGE_TABLE;
  const lines = list.flatMap(declareGroup);
  for (const d of ['ingress', 'egress'] as const) {
    const chain = portSgChain(tap, d);
    lines.push(`add chain ${t} ${chain}`, `flush chain ${t} ${chain}`);
    for (const r of portSgRules(tap, list, d)) lines.push(`add rule ${t} ${chain} ${r}`);
    const map = d === 'ingress' ? 'sg_ingress' : 'sg_egress';
    lines.push(`add element ${t} ${map} { "${tap}" : jump ${chain} }`);
  }
  return lines;
}

/** Removes a port's security-group chains whether or not it has them (declared first, so the deletes cannot fail). */
export function dropPortSgLines(tap: string): string[] {
  assertIfName(tap, 'tap');
  const t = BRIDGE_TABLE;
  return (['ingress', 'egress'] as const).flatMap((d) => {
    const chain = portSgChain(tap, d);
    const map = d === 'ingress' ? 'sg_ingress' : 'sg_egress';
    return [
      `add chain ${t} ${chain}`,
      `add element ${t} ${map} { "${tap}" : jump ${chain} }`,
      `delete element ${t} ${map} { "${tap}" }`,
      `flush chain ${t} ${chain}`,
      `delete chain ${t} ${chain}`,
    ];
  });
}
