// What differs between a security group as a host realised it and as the spec wants it, in words a plan shows:
// `rules +tcp/443 from 0.0.0.0/0, -icmp from any`, `members +52:54:00:00:00:01`.
import type { SecurityGroupConfig, SecurityGroupRuleConfig } from '../shared/security-groups.js';
import { canonicalJson } from './hash.js';

/** Beyond this many changed members a plan line gives counts instead of MACs. */
const MEMBERS_LISTED_MAX = 4;

/** `tcp/80,8000-8100 from 10.0.0.0/8`, `egress udp/53 to group dns`, `icmp from any`: one rule in a plan line. */
export function describeRule(r: SecurityGroupRuleConfig): string {
  const ports = r.ports?.length
    ? `/${r.ports.map((p) => (p.from === p.to ? `${p.from}` : `${p.from}-${p.to}`)).join(',')}`
    : '';
  const remote = r.cidr ?? (r.group !== undefined ? `group ${r.group}` : 'any');
  const dir = r.direction === 'egress' ? 'egress ' : '';
  return `${dir}${r.protocol}${ports} ${r.direction === 'egress' ? 'to' : 'from'} ${remote}`;
}

/** Multiset difference of `from` and `to` by key: what only `to` has (+) and what only `from` has (-). */
function added<T>(from: readonly T[], to: readonly T[], key: (t: T) => string): T[] {
  const left = new Map<string, number>();
  for (const t of from) left.set(key(t), (left.get(key(t)) ?? 0) + 1);
  return to.filter((t) => {
    const n = left.get(key(t)) ?? 0;
    if (n === 0) return true;
    left.set(key(t), n - 1);
    return false;
  });
}

/** The changed rules and members of a group, one text each (`rules ...`, `members ...`); empty when equal. */
export function securityGroupChanges(from: SecurityGroupConfig, to: SecurityGroupConfig): string[] {
  const out: string[] = [];
  const plus = added(from.rules, to.rules, canonicalJson);
  const minus = added(to.rules, from.rules, canonicalJson);
  if (plus.length || minus.length)
    out.push(
      `rules ${[...plus.map((r) => `+${describeRule(r)}`), ...minus.map((r) => `-${describeRule(r)}`)].join(', ')}`,
    );
  else if (canonicalJson(from.rules) !== canonicalJson(to.rules)) out.push('rules reordered');
  const inMacs = added(from.memberMacs, to.memberMacs, (m) => m);
  const outMacs = added(to.memberMacs, from.memberMacs, (m) => m);
  if (inMacs.length + outMacs.length > MEMBERS_LISTED_MAX)
    out.push(`members +${inMacs.length} -${outMacs.length}`);
  else if (inMacs.length + outMacs.length > 0)
    out.push(`members ${[...inMacs.map((m) => `+${m}`), ...outMacs.map((m) => `-${m}`)].join(', ')}`);
  return out;
}
