// What security groups let through between matrix endpoints, from the spec alone (pure). The semantics are those of
// src/shared/security-groups.ts; this module decides, per path, which addresses and MACs a rule is matched against.
import { cidrContains, formatIpv4, parseCidr, parseIpv4 } from '../spec/net.js';
import type { SecurityGroupRuleSpec, Spec } from '../spec/schema.js';
import { subnetPlan } from '../spec/validate/addressing.js';
import { type Endpoint, type Expectation, expectCell, type Router, type VmEndpoint } from './expect.js';

/** What a probe sends: an ICMP echo, or a TCP/UDP packet to a destination port. */
export type Traffic = { protocol: 'icmp' } | { protocol: 'tcp' | 'udp'; port: number };

/** Whether the groups on a path let a packet through, and why (the rule that allows it, or what none allows). */
export interface GroupVerdict {
  allowed: boolean;
  reason: string;
}

/** What the verdicts need beyond the endpoints: the spec's groups and the hosts' addresses on each network. */
export interface GroupContext {
  groups: ReadonlyMap<string, Spec['securityGroups'][number]>;
  /** A host's LAN address (the matrix's host endpoint address): what masqueraded packets leave with. */
  hostAddress: ReadonlyMap<string, string>;
  /** The host's address on a nat/isolated network, or a vxlan/vlan network's gateway address. */
  gatewayAddress: ReadonlyMap<string, string>;
}

/** The context of a spec's verdicts; `endpoints` gives the hosts' addresses. */
export function groupContextOf(spec: Spec, endpoints: readonly Endpoint[]): GroupContext {
  const gatewayAddress = new Map<string, string>();
  for (const n of spec.networks) {
    const plan = subnetPlan(n);
    if (plan) gatewayAddress.set(n.name, formatIpv4(plan.gateway));
  }
  return {
    groups: new Map(spec.securityGroups.map((g) => [g.name, g] as const)),
    hostAddress: new Map(endpoints.flatMap((e) => (e.kind === 'host' ? [[e.host, e.address] as const] : []))),
    gatewayAddress,
  };
}

const multiHost = (e: VmEndpoint) => e.mode === 'vxlan' || e.mode === 'vlan';

/**
 * Whether a frame between two VM NICs keeps its sender's MAC: both on one network (one bridge, overlay or VLAN), or
 * both bridged onto the LAN. Anything else is routed by a host, whose MAC the receiver sees.
 */
export function sameL2(a: VmEndpoint, b: VmEndpoint): boolean {
  return a.network === b.network || (a.mode === 'bridge' && b.mode === 'bridge');
}

/**
 * The source a packet from `src` has when it reaches VM NIC `dst` (given the topology lets it): its address, and
 * whether its MAC is a VM NIC's (`vm`: same L2, so remote-group rules can match it).
 * - a host reaches a nat/isolated/overlay VM from its address on that network (the gateway address), a bridged VM
 *   from its LAN address;
 * - a VM on dst's L2 keeps its address and MAC;
 * - a VM routed off its network (nat, overlay with `gateway.nat`) is masqueraded to its (gateway) host's LAN address.
 */
export function sourceAsSeen(
  src: Endpoint,
  dst: VmEndpoint,
  ctx: GroupContext,
): { address?: string; vm?: VmEndpoint } {
  if (src.kind === 'host')
    return { address: dst.mode === 'bridge' ? src.address : ctx.gatewayAddress.get(dst.network) };
  if (src.kind !== 'vm') return { address: src.address };
  if (sameL2(src, dst)) return { ...(src.address ? { address: src.address } : {}), vm: src };
  const via = multiHost(src) ? src.gatewayHost : src.host;
  const address = via === undefined ? undefined : ctx.hostAddress.get(via);
  return address ? { address } : {};
}

function ruleMatchesTraffic(r: SecurityGroupRuleSpec, t: Traffic): boolean {
  if (r.protocol !== 'any' && r.protocol !== t.protocol) return false;
  if (t.protocol === 'icmp' || !r.ports) return true;
  return r.ports.some((p) => {
    const [from, to] = portRange(p);
    return t.port >= from && t.port <= to;
  });
}

/** A rule port entry as `[from, to]` (80 or "8000-8100"). */
export function portRange(p: number | string): [number, number] {
  if (typeof p === 'number') return [p, p];
  const [a, b] = p.split('-').map(Number) as [number, number];
  return [a, b];
}

function inCidr(cidr: string, address: string | undefined): boolean {
  const c = parseCidr(cidr);
  const a = address === undefined ? undefined : parseIpv4(address);
  return c !== undefined && a !== undefined && cidrContains(c, a);
}

/** The rule as an operator reads it: `web: ingress tcp 80 from 192.168.50.0/24`. */
export function describeRule(group: string, r: SecurityGroupRuleSpec): string {
  const ports = r.ports?.length ? ` ${r.ports.join(',')}` : '';
  const remote = r.group ? `group ${r.group}` : (r.cidr ?? 'any');
  return `${group}: ${r.direction} ${r.protocol}${ports} ${r.direction === 'ingress' ? 'from' : 'to'} ${remote}`;
}

function describeTraffic(t: Traffic): string {
  return t.protocol === 'icmp' ? 'icmp' : `${t.protocol} ${t.port}`;
}

type Match = (r: SecurityGroupRuleSpec) => boolean;

/** The first rule of `groups` in `direction` that matches, as `describeRule` says it; undefined if none. */
function firstMatch(
  groups: readonly string[],
  direction: 'ingress' | 'egress',
  ctx: GroupContext,
  match: Match,
): string | undefined {
  for (const g of groups) {
    const r = ctx.groups.get(g)?.rules.find((x) => x.direction === direction && match(x));
    if (r) return describeRule(g, r);
  }
  return undefined;
}

const hasEgressRules = (groups: readonly string[], ctx: GroupContext) =>
  groups.some((g) => ctx.groups.get(g)?.rules.some((r) => r.direction === 'egress'));

/**
 * What the security groups on the path say about `traffic` from `src` to `dst` (the topology letting it through):
 * dst's groups must let it in unless dst has none, and src's groups must let it out if any of them has egress
 * rules. Replies are stateful, so only the initiating direction counts. Undefined when no group is on the path.
 */
export function groupVerdict(
  src: Endpoint,
  dst: Endpoint,
  traffic: Traffic,
  ctx: GroupContext,
  /** The source as dst sees it, where the path is not the direct one (a port forward: DNAT keeps the source). */
  seenAs?: { address?: string },
): GroupVerdict | undefined {
  const what = describeTraffic(traffic);
  const reasons: string[] = [];
  if (src.kind === 'vm' && src.groups?.length && hasEgressRules(src.groups, ctx)) {
    const to = dst.kind === 'vm' && sameL2(src, dst) ? dst : undefined;
    const rule = firstMatch(src.groups, 'egress', ctx, (r) => {
      if (!ruleMatchesTraffic(r, traffic)) return false;
      if (r.group) return to?.groups?.includes(r.group) === true;
      return r.cidr === undefined || inCidr(r.cidr, dst.address);
    });
    if (!rule)
      return {
        allowed: false,
        reason: `no egress rule of ${src.groups.join(', ')} allows ${what} to ${dst.address ?? dst.id}`,
      };
    reasons.push(`out by ${rule}`);
  }
  if (dst.kind === 'vm' && dst.groups?.length) {
    const from: { address?: string; vm?: VmEndpoint } = seenAs ?? sourceAsSeen(src, dst, ctx);
    const rule = firstMatch(dst.groups, 'ingress', ctx, (r) => {
      if (!ruleMatchesTraffic(r, traffic)) return false;
      if (r.group) return from.vm?.groups?.includes(r.group) === true;
      return r.cidr === undefined || inCidr(r.cidr, from.address);
    });
    const seen = from.address ?? 'an unknown address';
    if (!rule)
      return {
        allowed: false,
        reason: `no ingress rule of ${dst.groups.join(', ')} allows ${what} from ${from.vm ? `${from.vm.id} (${seen})` : seen}`,
      };
    reasons.unshift(`in by ${rule}`);
  }
  return reasons.length ? { allowed: true, reason: `allowed ${reasons.join('; ')}` } : undefined;
}

/**
 * A ping cell's expectation with groups: the topology's (`expectCell`), narrowed by `groupVerdict`. `blockedBy`
 * says why an unreachable cell is expected so (the topology, or a security group), `verdict` what the groups said.
 */
export function expectPing(
  src: Endpoint,
  dst: Endpoint,
  routers: readonly Router[],
  ctx: GroupContext,
): { expected: Expectation; blockedBy?: 'topology' | 'security-group'; verdict?: GroupVerdict } {
  const topology = expectCell(src, dst, routers);
  if (topology === false) return { expected: false, blockedBy: 'topology' };
  const verdict = groupVerdict(src, dst, { protocol: 'icmp' }, ctx);
  if (!verdict) return { expected: topology };
  if (topology === 'any') return { expected: 'any', verdict };
  return verdict.allowed
    ? { expected: true, verdict }
    : { expected: false, blockedBy: 'security-group', verdict };
}

/** Ports of a NIC's ingress rules worth probing: the first of each tcp range (rules for tcp or any), in order. */
export function rulePorts(groups: readonly string[], ctx: GroupContext, protocol: 'tcp' | 'udp'): number[] {
  const out: number[] = [];
  for (const g of groups)
    for (const r of ctx.groups.get(g)?.rules ?? [])
      if (r.direction === 'ingress' && (r.protocol === protocol || r.protocol === 'any'))
        for (const p of r.ports ?? []) {
          const first = portRange(p)[0];
          if (!out.includes(first)) out.push(first);
        }
  return out;
}

/** Ports tried in turn for the "no rule names it" probe: unassigned or rarely used. */
const UNRULED_CANDIDATES = [9, 1234, 4321, 31337, 60001, 61002];

/** A port no ingress rule of `groups` names for `protocol` (rules without ports aside); undefined if all are. */
export function unruledPort(
  groups: readonly string[],
  ctx: GroupContext,
  protocol: 'tcp' | 'udp',
): number | undefined {
  const ranges = groups.flatMap((g) =>
    (ctx.groups.get(g)?.rules ?? [])
      .filter((r) => r.direction === 'ingress' && (r.protocol === protocol || r.protocol === 'any'))
      .flatMap((r) => (r.ports ?? []).map(portRange)),
  );
  return UNRULED_CANDIDATES.find((p) => !ranges.some(([a, b]) => p >= a && p <= b));
}
