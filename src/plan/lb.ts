// Load balancers in the plan (docs/load-balancers.md): each LB host gets the LB's resolved config; an LB missing,
// broken (a process down, a device gone) or changed on a host is ensured there, one the spec no longer gives a host
// is deleted. Pure.
import { defaultPriority, defaultVrid, type LbConfig, type ObservedLb } from '../shared/lb.js';
import { bridgeName, formatIpv4, parseCidr } from '../spec/net.js';
import type { Spec } from '../spec/schema.js';
import { isMultiHost } from '../spec/topology.js';
import { subnetPlan } from '../spec/validate/addressing.js';
import { configHash } from './hash.js';
import type { Step } from './steps.js';

/** Desired load balancers of every spec host, keyed by host name (hosts running none are absent). */
export type DesiredLoadBalancers = Record<string, LbConfig[]>;

/** The config each LB host of each load balancer of a validated spec realises. */
export function resolveLoadBalancers(spec: Spec): DesiredLoadBalancers {
  const out: DesiredLoadBalancers = {};
  for (const lb of spec.loadBalancers) {
    const net = spec.networks.find((n) => n.name === lb.network);
    if (!net || !isMultiHost(net) || net.cidr === undefined) continue;
    const cidr = parseCidr(net.cidr);
    if (!cidr) continue;
    const plan = subnetPlan(net);
    const gateway = plan ? formatIpv4(plan.gateway) : undefined;
    const backends = lb.backends.flatMap((b) => {
      const ip = spec.vms.find((v) => v.name === b)?.nics.find((n) => n.network === net.name)?.ip;
      return ip === undefined ? [] : [{ vm: b, address: ip }];
    });
    lb.hosts.forEach((h, i) => {
      const cfg: LbConfig = {
        name: lb.name,
        network: net.name,
        bridge: bridgeName(net.name),
        mtu: net.mtu,
        prefix: cidr.prefix,
        ...(gateway ? { gateway } : {}),
        vip: lb.vip,
        vrid: lb.vrid ?? defaultVrid(lb.name),
        address: h.address,
        priority: h.priority ?? defaultPriority(i),
        peers: lb.hosts.filter((o) => o.host !== h.host).map((o) => o.address),
        frontends: lb.frontends.map((f) => ({
          port: f.port,
          protocol: f.protocol,
          backendPort: f.backendPort ?? f.port,
        })),
        backends,
        healthCheck: { ...lb.healthCheck },
      };
      out[h.host] = [...(out[h.host] ?? []), cfg];
    });
  }
  return out;
}

/** Hash of an LB config, as the agent stores it after realising it. */
export function lbConfigHash(cfg: LbConfig): string {
  return configHash(cfg);
}

/** Steps that bring `host`'s load balancers from `seen` to `want`; unchanged ones are listed in `unchanged`. */
export function planLoadBalancers(
  host: string,
  want: readonly LbConfig[],
  seen: readonly ObservedLb[],
  steps: Step[],
  unchanged: string[],
): void {
  const observed = new Map(seen.map((l) => [l.name, l]));
  for (const lb of want) {
    const hash = lbConfigHash(lb);
    const o = observed.get(lb.name);
    const reason = !o
      ? 'not on the host'
      : o.problems.length > 0
        ? `repair: ${o.problems.join('; ')}`
        : o.configHash !== hash
          ? 'configuration changed'
          : undefined;
    if (reason === undefined) unchanged.push(`load balancer ${lb.name} on ${host}`);
    else steps.push({ kind: o ? 'lb.update' : 'lb.create', host, lb, configHash: hash, reason });
  }
  const names = new Set(want.map((l) => l.name));
  for (const o of seen)
    if (!names.has(o.name)) steps.push({ kind: 'lb.delete', host, name: o.name, reason: 'not in the spec' });
}
