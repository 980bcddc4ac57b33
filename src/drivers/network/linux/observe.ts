// What the linux backend reports about its networks: each persisted network checked against the live
// host (bridge, member device, gateway address, dnsmasq, nftables table, forwarding), and bridges
// labelled by vmlink that have no state.

import type { Bridge, FdbEntry } from '../../../exec/bridge.js';
import type { Ip } from '../../../exec/ip.js';
import type { Nft } from '../../../exec/nft.js';
import type { Runner } from '../../../exec/runner.js';
import type { ObservedLease, ObservedNetwork } from '../../../shared/model.js';
import { activeLeases, type DnsmasqManager, dnsmasqPaths } from './dnsmasq.js';
import { ipForwarding } from './forwarding.js';
import { vlanProblems, vxlanProblems } from './overlay-devices.js';
import { isRouted, needsRules, TABLE_FAMILY, TABLE_NAME } from './ruleset.js';
import { ALIAS_PREFIX, type LinuxNetworkStateStore } from './state.js';

/** What observing networks needs from the driver. */
export interface ObserveHost {
  runner: Runner;
  netns: string | undefined;
  /** The directory of one network's files (its dnsmasq's). */
  networkDir(name: string): string;
  ip: Ip;
  br: Bridge;
  nft: Nft;
  dnsmasq: DnsmasqManager;
  states: LinuxNetworkStateStore;
}

/** Persisted networks with live checks; bridges labelled by vmlink without state are listed with a problem. */
export async function observeNetworks(host: ObserveHost): Promise<ObservedNetwork[]> {
  const states = await host.states.readAll();
  const wantTable = states.some((s) => needsRules(s.config));
  // One look at each kind of host state, side by side; then every network is judged against it.
  const [linkList, addrs, fdb, tablePresent, forwarding] = await Promise.all([
    host.ip.link.list(),
    host.ip.addr.list({ family: 'inet' }),
    states.some((s) => s.config.mode === 'vxlan') ? host.br.fdbByDevice() : new Map<string, FdbEntry[]>(),
    wantTable ? host.nft.listTable(TABLE_FAMILY, TABLE_NAME).then((t) => t !== undefined) : true,
    states.some((s) => s.config.subnet && isRouted(s.config))
      ? ipForwarding(host.runner, host.netns)
      : undefined,
  ]);
  const links = new Map(linkList.map((l) => [l.name, l]));
  const out = await Promise.all(
    states.map(async (s): Promise<ObservedNetwork> => {
      const c = s.config;
      const problems: string[] = [];
      // Every network has its part of the table (the guest filters at least).
      if (!tablePresent) problems.push(`nftables table ${TABLE_FAMILY} ${TABLE_NAME} missing`);
      const br = links.get(c.bridge);
      if (!br) problems.push(`bridge ${c.bridge} missing`);
      else {
        if (br.kind !== 'bridge') problems.push(`${c.bridge} is not a bridge`);
        if (!br.up) problems.push(`bridge ${c.bridge} is down`);
        if (br.mtu !== c.mtu) problems.push(`bridge ${c.bridge} mtu is ${br.mtu}, want ${c.mtu}`);
        if (br.alias !== ALIAS_PREFIX + c.name)
          problems.push(`bridge ${c.bridge} alias is ${br.alias ?? 'unset'}`);
      }
      if (c.mode === 'bridge') {
        const ul = links.get(c.uplink!);
        if (!ul) problems.push(`uplink ${c.uplink} missing`);
        else {
          if (ul.master !== c.bridge) problems.push(`uplink ${c.uplink} not enslaved to ${c.bridge}`);
          const left = addrs.filter((a) => a.dev === c.uplink && a.scope === 'global');
          if (left.length)
            problems.push(
              `uplink ${c.uplink} still has ${left.map((a) => `${a.local}/${a.prefixLen}`).join(', ')}`,
            );
        }
        return { name: c.name, bridge: c.bridge, configHash: s.configHash, problems, config: c };
      }
      if (c.mode === 'vxlan') problems.push(...vxlanProblems(c, links, addrs, fdb));
      if (c.mode === 'vlan') problems.push(...vlanProblems(c, links));
      const onBridge = addrs.filter((a) => a.dev === c.bridge && a.scope === 'global');
      const s4 = c.subnet;
      let leases: ObservedLease[] | undefined;
      if (s4) {
        if (br && !onBridge.some((a) => a.local === s4.gateway && a.prefixLen === s4.prefixLength)) {
          problems.push(`address ${s4.gateway}/${s4.prefixLength} missing on ${c.bridge}`);
        }
        const dns = dnsmasqPaths(host.networkDir(c.name));
        const [pid, all] = await Promise.all([host.dnsmasq.pid(dns), host.dnsmasq.leases(dns)]);
        if (pid === undefined) problems.push('dnsmasq not running');
        leases = activeLeases(all);
        if (isRouted(c) && !forwarding) problems.push('net.ipv4.ip_forward is off');
      } else if (onBridge.length) {
        // Not this network's gateway host (any more): the bridge only switches frames.
        problems.push(
          `bridge ${c.bridge} has ${onBridge.map((a) => `${a.local}/${a.prefixLen}`).join(', ')}, want no address`,
        );
      }
      return {
        name: c.name,
        bridge: c.bridge,
        configHash: s.configHash,
        problems,
        config: c,
        ...(leases ? { leases } : {}),
      };
    }),
  );
  const known = new Set(states.map((s) => s.config.name));
  for (const l of links.values()) {
    if (!l.alias?.startsWith(ALIAS_PREFIX)) continue;
    const name = l.alias.slice(ALIAS_PREFIX.length);
    if (known.has(name)) continue;
    out.push({ name, bridge: l.name, configHash: '', problems: [`bridge ${l.name} has no vmlink state`] });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
