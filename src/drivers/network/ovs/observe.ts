// What the OVS backend reports about its networks: each persisted network checked against the live
// daemons, bridges, ports, tunnels, underlay, gateway address, dnsmasq and OpenFlow table.
import type { Ip } from '../../../exec/ip.js';
import type { Nft } from '../../../exec/nft.js';
import { type Ovs, type OvsPort, parseFlowDump } from '../../../exec/ovs.js';
import type { ObservedLease, ObservedNetwork } from '../../../shared/model.js';
import { activeLeases, type DnsmasqManager, dnsmasqPaths } from '../linux/dnsmasq.js';
import type { SecurityGroupStore } from '../security-group-store.js';
import type { OvsDaemons } from './daemon.js';
import { buildFlows, countOurFlows, flowPorts, reservationsOn, roleOf } from './flows.js';
import { OVS_TABLE_FAMILY, OVS_TABLE_NAME } from './host-input.js';
import { gatewayPortOf, tunnelPortName, underlayBridgeOf } from './names.js';
import type { OvsStateStore } from './state.js';

/** What observing networks needs from the driver. */
export interface OvsObserveHost {
  /** The directory of one network's files (its dnsmasq's). */
  networkDir(name: string): string;
  ip: Ip;
  ovs: Ovs;
  daemons: OvsDaemons;
  dnsmasq: DnsmasqManager;
  nft: Nft;
  states: OvsStateStore;
  /** Applied security groups (their flows are part of a bridge's table). */
  groups: SecurityGroupStore;
}

/** Persisted networks with live checks of the daemons, bridges, ports, tunnels, gateway and flows. */
export async function observeOvsNetworks(host: OvsObserveHost): Promise<ObservedNetwork[]> {
  const states = await host.states.readAll();
  if (states.length === 0) return [];
  const daemonProblems = await host.daemons.problems();
  if (daemonProblems.length)
    return states.map((s) => ({
      name: s.config.name,
      bridge: s.config.bridge,
      configHash: s.configHash,
      problems: [...daemonProblems],
      config: s.config,
    }));
  const [bridges, ports, links, addrs, table] = await Promise.all([
    host.ovs.bridges(),
    host.ovs.ports(),
    host.ip.link.list(),
    host.ip.addr.list({ family: 'inet' }),
    host.nft.listTable(OVS_TABLE_FAMILY, OVS_TABLE_NAME),
  ]);
  const dp = await host.daemons.datapathType();
  const linkNames = new Set(links.map((l) => l.name));
  const portByName = new Map(ports.map((p) => [p.name, p]));
  const flowCount = new Map<string, number>();
  const groups = await host.groups.byName();
  const out: ObservedNetwork[] = [];
  for (const s of states) {
    const c = s.config;
    const problems: string[] = [];
    // The guests' host input policy lives there (host-input.ts): without it they reach every host port.
    if (table === undefined) problems.push(`nftables table ${OVS_TABLE_FAMILY} ${OVS_TABLE_NAME} missing`);
    const br = bridges.find((b) => b.name === c.bridge);
    if (!br) problems.push(`OVS bridge ${c.bridge} missing`);
    else {
      if (br.datapathType !== dp)
        problems.push(`OVS bridge ${c.bridge} datapath is ${br.datapathType || 'system'}, want ${dp}`);
      if (!flowCount.has(c.bridge)) {
        const reserved = reservationsOn(
          c.bridge,
          states.map((x) => x.config),
        );
        const want = buildFlows(roleOf(c), flowPorts(ports, c.bridge, reserved), groups).length;
        const have = countOurFlows(parseFlowDump(await host.ovs.dumpFlows(c.bridge)));
        flowCount.set(c.bridge, have - want);
      }
      if (flowCount.get(c.bridge) !== 0) problems.push(`OpenFlow table of ${c.bridge} is not vmlink's`);
    }
    const portProblem = (name: string, what: string, check?: (p: OvsPort) => string | undefined) => {
      const p = portByName.get(name);
      if (!p || p.bridge !== c.bridge) return problems.push(`${what} ${name} is not a port of ${c.bridge}`);
      if (p.error) return problems.push(`${what} ${name}: ${p.error}`);
      const why = check?.(p);
      if (why) problems.push(`${what} ${name} ${why}`);
    };
    if (c.mode === 'vlan') {
      const v = c.vlan!;
      if (!linkNames.has(v.trunk)) problems.push(`trunk NIC ${v.trunk} missing`);
      portProblem(v.trunk, 'trunk NIC', (p) =>
        p.trunks.length && !p.trunks.includes(v.id) ? `does not carry VLAN ${v.id}` : undefined,
      );
    } else {
      const x = c.vxlan!;
      for (const remote of x.remotes)
        portProblem(tunnelPortName(x.device, remote), 'tunnel', (p) =>
          p.type !== 'vxlan' || p.options.remote_ip !== remote || p.options.key !== String(x.vni)
            ? 'has the wrong VXLAN settings'
            : undefined,
        );
      if (dp === 'netdev') {
        const ub = underlayBridgeOf(bridges, x.underlay);
        if (!bridges.some((b) => b.name === ub)) problems.push(`underlay bridge ${ub} missing`);
        else if (!addrs.some((a) => a.dev === ub && a.local === x.local))
          problems.push(`VTEP address ${x.local} missing on ${ub}`);
      }
    }
    let leases: ObservedLease[] | undefined;
    if (c.subnet) {
      const gw = gatewayPortOf(ports, c.name);
      portProblem(gw, 'gateway port', (p) =>
        c.mode === 'vlan' && p.tag !== c.vlan!.id
          ? `has tag ${p.tag ?? 'none'}, want ${c.vlan!.id}`
          : undefined,
      );
      if (
        !addrs.some(
          (a) => a.dev === gw && a.local === c.subnet!.gateway && a.prefixLen === c.subnet!.prefixLength,
        )
      )
        problems.push(`address ${c.subnet.gateway}/${c.subnet.prefixLength} missing on ${gw}`);
      const dns = dnsmasqPaths(host.networkDir(c.name));
      if ((await host.dnsmasq.pid(dns)) === undefined) problems.push('dnsmasq not running');
      leases = activeLeases(await host.dnsmasq.leases(dns));
    }
    out.push({
      name: c.name,
      bridge: c.bridge,
      configHash: s.configHash,
      problems,
      config: c,
      ...(leases ? { leases } : {}),
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
