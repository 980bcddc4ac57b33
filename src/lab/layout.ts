// Where things are on a lab's LAN: the management station's address, the machines in switch-port order, the
// segments, and the switch ports that carry a host's links (what a fault drill pulls). Pure: no commands.
import { DEFAULT_MTU } from '../shared/limits.js';
import { AGENT_TCP_PORT } from '../shared/paths.js';
import { formatIpv4, parseCidr } from '../spec/net.js';
import type { LabSpec } from '../spec/schema.js';

/** A lab segment: an extra L2 switch every lab host joins on its next NIC (eth1, eth2, ...). */
export interface LabSegment {
  name: string;
  mtu: number;
}

/** The management station's address on the lab LAN: the highest usable address of `lab.lan.cidr`. */
export function labMgmtAddress(spec: LabSpec): string {
  return formatIpv4(parseCidr(spec.lan.cidr)!.broadcast - 1);
}

/** The LAN's MTU (`lab.lan.mtu`, default 1500). */
export function labLanMtu(spec: LabSpec): number {
  return (spec.lan as { mtu?: number }).mtu ?? DEFAULT_MTU;
}

/** The lab's extra segments in order (`lab.segments`); host NIC eth(i+1) joins segment i. */
export function labSegments(spec: LabSpec): LabSegment[] {
  const segs = (spec as { segments?: Array<{ name: string; mtu?: number }> }).segments ?? [];
  return segs.map((s) => ({ name: s.name, mtu: s.mtu ?? DEFAULT_MTU }));
}

/** Where the controller reaches a lab host's agent across the LAN (mutual TLS). */
export const labAgentTcp = (address: string): string => `https://${address}:${AGENT_TCP_PORT}`;

/**
 * Every machine on the lab LAN in the order of their switch ports (p1, p2, ...): hosts, peers, storage machines,
 * then etcd members and cluster controllers (last, so that older labs keep their ports).
 */
export const labLanMachines = (spec: LabSpec) => [
  ...spec.hosts,
  ...spec.peers,
  ...spec.storage,
  ...spec.etcd,
  ...spec.controllers,
];

/** The LAN switch's port of the `i`-th LAN machine (its eth0's veth peer). */
export const lanPort = (i: number): string => `p${i + 1}`;

/** The switch's port of host number `hi`'s NIC on segment `si`. */
export const segmentPort = (hi: number, si: number): string => `h${hi}s${si}`;

/**
 * The switch ports (in the switch namespace) that carry lab host `host`'s links: its LAN port and one per
 * segment. Setting them down cuts the host off as a pulled cable would; undefined for a machine that is no host.
 */
export function labHostSwitchPorts(spec: LabSpec, host: string): string[] | undefined {
  const hi = spec.hosts.findIndex((h) => h.name === host);
  if (hi < 0) return undefined;
  const li = labLanMachines(spec).findIndex((m) => m.name === host);
  return [lanPort(li), ...labSegments(spec).map((_, si) => segmentPort(hi, si))];
}

/** The lab machines that run a vmlink agent: its hosts, then its storage machines. */
export const agentMachines = (spec: LabSpec) => [...spec.hosts, ...spec.storage];

/** Switch bridge of lab segment `i`. */
export const segBridge = (i: number): string => `seg${i}`;
