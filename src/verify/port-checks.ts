// Security-group port checks (Tempest's scenarios), from the spec alone (pure): which TCP ports of which VM NICs are
// probed from where, what each probe should see and which rule says so. The listeners they need run in the guest
// (busybox httpd, see ./port-listeners.ts), so a blocked port proves the filter, not an absent service.
import { type Endpoint, expectCell, type Router, type VmEndpoint } from './expect.js';
import { type GroupContext, groupVerdict, rulePorts, unruledPort } from './security-groups.js';

/** Most port checks one verify runs (sources x ports of every NIC with groups); the rest are counted as left out. */
export const PORT_CHECKS_MAX = 256;
/** Most rule ports probed per NIC (plus one port no rule names). */
export const PORT_CHECK_PORTS_MAX = 8;

/** One probe of a TCP port of a VM NIC with groups. */
export interface PortCheck {
  src: Endpoint;
  dst: VmEndpoint;
  protocol: 'tcp';
  port: number;
  /** Whether the probe should connect: the topology lets src reach dst, and the groups allow it. */
  expected: boolean;
  /** The rule that allows it, or what no rule allows (from `groupVerdict`). */
  rule: string;
  /** No ingress rule of dst's groups names this port: the "blocked without a rule" probe. */
  unruled: boolean;
}

/** The plan of a verify's port checks: the checks, the NICs left out and why, and how many checks the cap cut. */
export interface PortCheckPlan {
  checks: PortCheck[];
  /** Per destination VM NIC: the ports to listen on (rule ports first, then the unruled one). */
  listeners: Map<VmEndpoint, number[]>;
  /** Operator-facing notes: NICs with groups that are not probed, and why. */
  notes: string[];
  /** Checks beyond `PORT_CHECKS_MAX`, not run. */
  leftOut: number;
}

/**
 * Port checks for every VM NIC with groups whose guest can run a listener (`listens`: the test guest): each rule
 * port (the first of each range) and one port no rule names, from every endpoint the topology lets reach the NIC.
 * A VM source probes only over its own NIC's network unless it has one NIC (its TCP probe cannot be bound to a NIC,
 * so it leaves by the guest's routes).
 */
export function portChecksOf(
  endpoints: readonly Endpoint[],
  routers: readonly Router[],
  ctx: GroupContext,
  listens: (vm: string) => boolean,
): PortCheckPlan {
  const plan: PortCheckPlan = { checks: [], listeners: new Map(), notes: [], leftOut: 0 };
  const nicsOfVm = new Map<string, number>();
  for (const e of endpoints) if (e.kind === 'vm') nicsOfVm.set(e.vm, (nicsOfVm.get(e.vm) ?? 0) + 1);
  for (const dst of endpoints) {
    if (dst.kind !== 'vm' || !dst.groups?.length) continue;
    if (!listens(dst.vm)) {
      plan.notes.push(`${dst.id}: not port-checked (only the test guest runs the listeners the checks need)`);
      continue;
    }
    const named = rulePorts(dst.groups, ctx, 'tcp');
    if (named.length > PORT_CHECK_PORTS_MAX)
      plan.notes.push(
        `${dst.id}: ${named.length} rule ports, the first ${PORT_CHECK_PORTS_MAX} checked (${named.slice(PORT_CHECK_PORTS_MAX).join(', ')} not)`,
      );
    const unruled = unruledPort(dst.groups, ctx, 'tcp');
    const ports = [...named.slice(0, PORT_CHECK_PORTS_MAX), ...(unruled === undefined ? [] : [unruled])];
    const sources = endpoints.filter(
      (src) =>
        src !== dst &&
        !(src.kind === 'vm' && src.vm === dst.vm) &&
        !(src.kind === 'vm' && (nicsOfVm.get(src.vm) ?? 0) > 1 && src.network !== dst.network) &&
        expectCell(src, dst, routers) === true,
    );
    if (!sources.length || !ports.length) continue;
    const wanted: number[] = [];
    for (const port of ports)
      for (const src of sources) {
        if (plan.checks.length >= PORT_CHECKS_MAX) {
          plan.leftOut++;
          continue;
        }
        const v = groupVerdict(src, dst, { protocol: 'tcp', port }, ctx);
        // dst has groups, so there is always a verdict; a missing one would be a bug, never an "allowed".
        plan.checks.push({
          src,
          dst,
          protocol: 'tcp',
          port,
          expected: v?.allowed === true,
          rule: v?.reason ?? 'no verdict',
          unruled: port === unruled,
        });
        if (!wanted.includes(port)) wanted.push(port);
      }
    if (wanted.length) plan.listeners.set(dst, wanted);
  }
  if (plan.leftOut)
    plan.notes.push(`${plan.leftOut} port check(s) left out (at most ${PORT_CHECKS_MAX} per verify)`);
  return plan;
}
