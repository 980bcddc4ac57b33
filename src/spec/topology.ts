// Where multi-host networks live: member hosts, underlay addresses and MTUs, physical segments. Pure; shared by
// validation and resolution so that both read the spec's defaults the same way.

import { DEFAULT_MTU } from '../shared/limits.js';
import type { HostSpec, MultiHostNetworkSpec, NetworkSpec, NicSpec, Spec } from './schema.js';

export { VXLAN_OVERHEAD, VXLAN_PORT } from '../shared/limits.js';
/** MTU of a link nobody configured. */
export const DEFAULT_LINK_MTU = DEFAULT_MTU;
/** The segment every host reaches through its uplink. */
export const DEFAULT_SEGMENT = 'default';

/** Whether a network spans hosts (vxlan, vlan) rather than living on one (nat, bridge, isolated). */
export function isMultiHost(net: NetworkSpec): net is MultiHostNetworkSpec {
  return net.mode === 'vxlan' || net.mode === 'vlan';
}

/**
 * Member hosts of a network: `host` for single-host networks; `hosts` (default: every compute host: storage hosts
 * carry no networks) otherwise.
 */
export function networkHosts(spec: Spec, net: NetworkSpec): string[] {
  if (!isMultiHost(net)) return [net.host];
  return net.hosts ?? spec.hosts.filter((h) => h.role !== 'storage').map((h) => h.name);
}

/** Networks a NIC attaches to: its network, or its trunk's members. */
export function nicNetworks(nic: NicSpec): string[] {
  return nic.trunk ?? (nic.network === undefined ? [] : [nic.network]);
}

/** A host's underlay address: `hosts[].address`, else its lab machine's address; undefined when neither. */
export function hostAddress(spec: Spec, host: HostSpec): string | undefined {
  return host.address ?? labMachineOf(spec, host.name)?.address;
}

/** The lab machine standing in for spec host `name`: in `lab.hosts` (compute) or `lab.storage` (storage). */
export function labMachineOf(spec: Spec, name: string): { name: string; address: string } | undefined {
  return spec.lab?.hosts.find((m) => m.name === name) ?? spec.lab?.storage.find((m) => m.name === name);
}

/** MTU of the lab LAN switch. */
export function labLanMtu(spec: Spec): number {
  return spec.lab?.lan.mtu ?? DEFAULT_LINK_MTU;
}

/** A host's underlay MTU: `hosts[].network.mtu` ?? `lab.lan.mtu` ?? 1500. */
export function underlayMtu(spec: Spec, host: HostSpec): number {
  return host.network?.mtu ?? spec.lab?.lan.mtu ?? DEFAULT_LINK_MTU;
}

/**
 * Physical segment -> host NIC: `default` -> uplink; on a lab host `lab.segments[i]` -> `eth<i+1>`;
 * `hosts[].segments` adds to or overrides those.
 */
export function hostSegments(spec: Spec, host: HostSpec): Record<string, string> {
  const out: Record<string, string> = { [DEFAULT_SEGMENT]: host.uplink };
  if (spec.lab?.hosts.some((m) => m.name === host.name))
    spec.lab.segments.forEach((s, i) => {
      out[s.name] = `eth${i + 1}`;
    });
  return { ...out, ...host.segments };
}

/**
 * MTU of a segment as seen from a host, where the spec says it: the underlay MTU when the segment's NIC is the
 * uplink, else the lab segment's MTU; undefined when unknown (a real host's extra NIC).
 */
export function segmentMtu(spec: Spec, host: HostSpec, segment: string): number | undefined {
  const nic = hostSegments(spec, host)[segment];
  if (nic === undefined) return undefined;
  if (nic === host.uplink) return underlayMtu(spec, host);
  const lab = spec.lab?.segments.find((s) => s.name === segment);
  if (lab && spec.lab?.hosts.some((m) => m.name === host.name)) return lab.mtu ?? DEFAULT_LINK_MTU;
  return undefined;
}
