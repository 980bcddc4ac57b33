// The leases a port guard is seeded with: what this host's dnsmasq currently leases to the guarded ports' MACs on
// their own networks (see `ensurePortsScript`).
import type { PortConfig } from '../types.js';
import { activeLeases, type DnsmasqManager, dnsmasqPaths } from './dnsmasq.js';
import type { LearnedLease } from './port-guard.js';
import type { LinuxNetworkStateStore } from './state.js';

/** Unexpired leases of guarded ports' MACs, each from the network of the port's bridge. */
export async function guardLeases(
  states: LinuxNetworkStateStore,
  dnsmasq: DnsmasqManager,
  ports: readonly PortConfig[],
): Promise<LearnedLease[]> {
  const bridgeOf = new Map(ports.flatMap((p) => (p.security ? [[p.security.mac, p.bridge] as const] : [])));
  if (!bridgeOf.size) return [];
  const bridges = new Set(bridgeOf.values());
  const nets = (await states.readAll()).filter((s) => bridges.has(s.config.bridge) && s.config.subnet);
  const leases = await Promise.all(
    nets.map(async (n) =>
      activeLeases(await dnsmasq.leases(dnsmasqPaths(states.networkDir(n.config.name))))
        .filter((l) => bridgeOf.get(l.mac) === n.config.bridge)
        .map((l) => ({ mac: l.mac, ip: l.ip })),
    ),
  );
  return leases.flat();
}
