// `GET /v1/load-balancers` (docs/load-balancers.md): each LB of the applied spec next to what its hosts report:
// who holds the VIP, the backends UP or DOWN in HAProxy (the VIP holder's view), HAProxy and Keepalived per host.
// Pure: built from the spec and the status view's host reports (the agents were asked once, by `status`).
import { defaultPriority } from '../shared/lb.js';
import type { Spec } from '../spec/schema.js';
import type { HostStatus } from './views.js';
import type { LbView } from './wire-lb.js';

/** The LB views of `spec` from the hosts' reports (`hosts`: as `Views.status` returns them). */
export function lbViews(
  spec: Spec,
  hosts: readonly Pick<HostStatus, 'name' | 'reachable' | 'report' | 'error'>[],
): LbView[] {
  return (spec.loadBalancers ?? []).map((lb) => {
    const net = spec.networks.find((n) => n.name === lb.network);
    const hostViews = lb.hosts.map((h, i): LbView['hosts'][number] => {
      const st = hosts.find((x) => x.name === h.host);
      const o = st?.report?.loadBalancers?.find((l) => l.name === lb.name);
      const base = { host: h.host, address: h.address, priority: h.priority ?? defaultPriority(i) };
      if (!st?.reachable || !st.report)
        return {
          ...base,
          reachable: false,
          problems: [`agent unreachable${st?.error ? `: ${st.error.split('\n')[0]}` : ''}`],
        };
      if (!o) return { ...base, reachable: true, problems: ['not on the host (apply the spec)'] };
      return {
        ...base,
        reachable: true,
        haproxy: o.haproxy,
        keepalived: o.keepalived,
        holdsVip: o.holdsVip,
        problems: o.problems,
      };
    });
    const observed = lb.hosts.map((h) => ({
      host: h.host,
      lb: hosts.find((x) => x.name === h.host)?.report?.loadBalancers?.find((l) => l.name === lb.name),
    }));
    const withStats = observed.filter((x) => x.lb?.backendsUp !== undefined);
    const stats = withStats.find((x) => x.lb?.holdsVip) ?? withStats[0];
    const up = new Set(stats?.lb?.backendsUp ?? []);
    return {
      name: lb.name,
      network: lb.network,
      vip: lb.vip,
      frontends: lb.frontends.map((f) => ({
        port: f.port,
        protocol: f.protocol,
        backendPort: f.backendPort ?? f.port,
      })),
      vipHolders: hostViews.filter((h) => h.holdsVip).map((h) => h.host),
      backends: lb.backends.map((vm) => {
        const ip = spec.vms.find((v) => v.name === vm)?.nics.find((n) => n.network === net?.name)?.ip;
        return {
          vm,
          ...(ip ? { address: ip } : {}),
          state: stats ? (up.has(vm) ? ('UP' as const) : ('DOWN' as const)) : ('unknown' as const),
        };
      }),
      ...(stats ? { statsFrom: stats.host } : {}),
      hosts: hostViews,
    };
  });
}
