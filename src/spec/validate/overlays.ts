// Multi-host networks: site environments and their VLAN ranges, vxlan and vlan networks (backends, VNIs,
// VLAN ids, segments, member hosts, MTU over the underlay).
import { MTU_MIN, NETWORK_MTU_MAX } from '../../shared/limits.js';
import type { HostSpec, MultiHostNetworkSpec, Spec } from '../schema.js';
import {
  hostAddress,
  hostSegments,
  isMultiHost,
  labLanMtu,
  networkHosts,
  segmentMtu,
  underlayMtu,
  VXLAN_OVERHEAD,
} from '../topology.js';
import type { Add } from './common.js';

/** Site environments: VLAN ranges in order and disjoint between environments. */
export function checkSite(spec: Spec, add: Add) {
  const ranges: { env: string; from: number; to: number; path: string }[] = [];
  (spec.site?.environments ?? []).forEach((e, i) => {
    e.vlans.forEach((r, k) => {
      const path = `site.environments[${i}].vlans[${k}]`;
      if (r.from > r.to) {
        add(path, `from ${r.from} is above to ${r.to}; write the lower VLAN id in from`);
        return;
      }
      for (const o of ranges)
        if (o.env !== e.name && r.from <= o.to && o.from <= r.to)
          add(
            path,
            `${r.from}-${r.to} overlaps environment ${o.env}'s VLANs ${o.from}-${o.to} (${o.path}); environments need disjoint VLAN ranges`,
          );
      ranges.push({ env: e.name, from: r.from, to: r.to, path });
    });
  });
}

/** Checks vxlan and vlan networks: backends, VNIs, VLAN ids and environments, segments, MTUs, underlay addresses. */
export function checkMultiHost(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  const envs = new Map((spec.site?.environments ?? []).map((e) => [e.name, e] as const));
  const envList = [...envs.keys()].join(', ');
  const vnis = new Map<number, string>();
  const vlans = new Map<string, string>();
  const needAddress = new Map<string, string>();
  const hostOf = (name: string): { h: HostSpec; i: number } | undefined => {
    const i = hostIdx.get(name);
    return i === undefined ? undefined : { h: spec.hosts[i]!, i };
  };
  spec.networks.forEach((n, i) => {
    const base = `networks[${i}]`;
    if (!isMultiHost(n)) {
      if (n.backend !== 'linux')
        add(
          `${base}.backend`,
          `backend ${n.backend} is not supported on ${n.mode} networks yet; use backend: linux (or leave it out): ovs serves vxlan and vlan networks`,
        );
      return;
    }
    const members = [...new Set(networkHosts(spec, n))].flatMap((name) => {
      const h = hostOf(name);
      return h ? [h] : [];
    });
    if (n.gateway) {
      const g = n.gateway.host;
      if (!hostIdx.has(g))
        add(
          `${base}.gateway.host`,
          `unknown host "${g}" (hosts: ${spec.hosts.map((h) => h.name).join(', ')})`,
        );
      else if (!members.some((m) => m.h.name === g))
        add(
          `${base}.gateway.host`,
          `host "${g}" is not among the network's hosts (${members.map((m) => m.h.name).join(', ')}); pick one of them or add "${g}" to ${base}.hosts`,
        );
      if (n.cidr === undefined)
        add(
          `${base}.gateway`,
          `a gateway needs the network's subnet: add cidr (such as 10.20.0.0/24) or remove gateway`,
        );
    }
    if (n.dhcp && !n.gateway)
      add(
        `${base}.dhcp`,
        `DHCP is served by the gateway host: add gateway: { host: <one of the network's hosts> } or remove dhcp`,
      );
    if (n.mode === 'vxlan') {
      const first = vnis.get(n.vni);
      if (first !== undefined)
        add(
          `${base}.vni`,
          `VNI ${n.vni} is already used by vxlan network ${first}; every vxlan network needs its own VNI`,
        );
      else vnis.set(n.vni, `"${n.name}" (${base})`);
      checkVxlanMtu(spec, n, base, members, add);
      for (const m of members)
        if (hostAddress(spec, m.h) === undefined && !needAddress.has(m.h.name)) {
          needAddress.set(m.h.name, n.name);
          add(
            `hosts[${m.i}].address`,
            `host "${m.h.name}" carries vxlan network "${n.name}" (${base}) and needs an underlay address for its VXLAN endpoint: set hosts[${m.i}].address`,
          );
        }
      return;
    }
    // vlan
    const key = `${n.segment}\0${n.vlan}`;
    const first = vlans.get(key);
    if (first !== undefined)
      add(
        `${base}.vlan`,
        `VLAN ${n.vlan} is already used on segment ${n.segment} by network ${first}; pick another VLAN id or segment`,
      );
    else vlans.set(key, `"${n.name}" (${base})`);
    if (n.environment !== undefined) {
      const env = envs.get(n.environment);
      if (!env)
        add(
          `${base}.environment`,
          envs.size === 0
            ? `unknown environment "${n.environment}": no site.environments are defined; add { name: ${n.environment}, vlans: [{ from: ..., to: ... }] } there or remove environment`
            : `unknown environment "${n.environment}" (site.environments: ${envList})`,
        );
      else if (!env.vlans.some((r) => n.vlan >= r.from && n.vlan <= r.to))
        add(
          `${base}.vlan`,
          `${n.vlan} is outside environment ${env.name}'s VLANs ${env.vlans.map((r) => `${r.from}-${r.to}`).join(', ')}; pick a VLAN id inside them or another environment`,
        );
    }
    for (const m of members) {
      const segs = hostSegments(spec, m.h);
      if (segs[n.segment] === undefined) {
        add(
          `${base}.segment`,
          `segment "${n.segment}" does not exist on host "${m.h.name}" (its segments: ${Object.keys(segs).join(', ')}); add it to hosts[${m.i}].segments (such as ${n.segment}: eth1)${spec.lab ? ' or to lab.segments' : ''}`,
        );
        continue;
      }
      const segMtu = segmentMtu(spec, m.h, n.segment);
      if (segMtu !== undefined && n.mtu > segMtu) {
        const onUplink = segs[n.segment] === m.h.uplink;
        const li = spec.lab?.segments.findIndex((s) => s.name === n.segment) ?? -1;
        const raise = onUplink
          ? `set hosts[${m.i}].network.mtu: ${n.mtu}${spec.lab && labLanMtu(spec) < n.mtu ? ` (and lab.lan.mtu: ${n.mtu})` : ''}`
          : `set lab.segments[${li}].mtu: ${n.mtu}`;
        add(
          `${base}.mtu`,
          `${n.mtu} exceeds the MTU ${segMtu} of segment ${n.segment} on host "${m.h.name}" (${segs[n.segment]}): lower it to ${segMtu}, or ${raise}`,
        );
      }
    }
  });
}

/** A vxlan network's MTU plus VXLAN overhead fits every member host's underlay MTU. */
export function checkVxlanMtu(
  spec: Spec,
  n: MultiHostNetworkSpec,
  base: string,
  members: { h: HostSpec; i: number }[],
  add: Add,
) {
  const need = n.mtu + VXLAN_OVERHEAD;
  const minUnderlay = Math.min(...members.map((m) => underlayMtu(spec, m.h)));
  const lower = minUnderlay - VXLAN_OVERHEAD;
  // Suggest the common jumbo size (the largest network MTU) unless even that is too small.
  const jumbo = Math.max(need, NETWORK_MTU_MAX);
  for (const m of members) {
    const u = underlayMtu(spec, m.h);
    if (need <= u) continue;
    const lab = spec.lab && labLanMtu(spec) < jumbo ? ` (the lab LAN needs lab.lan.mtu: ${jumbo} too)` : '';
    const lowerIt = lower >= MTU_MIN ? `lower it to ${lower}, or ` : '';
    add(
      `${base}.mtu`,
      `${n.mtu} + ${VXLAN_OVERHEAD} bytes of VXLAN overhead exceeds ${m.h.name}'s underlay MTU ${u}: ${lowerIt}set hosts[${m.i}].network.mtu: ${jumbo} for jumbo frames${lab}`,
    );
  }
}
