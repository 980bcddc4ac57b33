// Pure helpers of the linux backend's multi-host modes: VXLAN devices with head-end replication
// (one static all-zeros FDB entry per remote VTEP), 802.1Q devices on a trunk NIC, and VLAN ports
// of a vlan_filtering bridge. No I/O: the driver feeds them what `ip`/`bridge` report.
import { createHash } from 'node:crypto';
import { type BridgeCommand, bridgeCmd, type FdbEntry, FLOOD_MAC } from '../../../exec/bridge.js';
import type { IpAddr, IpLink } from '../../../exec/ip-parse.js';
import type { NetworkConfig, VxlanConfig } from '../../../shared/model.js';
import type { PortConfig } from '../types.js';

/** VXLAN devices this driver creates carry the alias `vmlink:vxlan:<network>`. */
export const VXLAN_ALIAS_PREFIX = 'vmlink:vxlan:';
/** 802.1Q devices this driver creates carry the alias `vmlink:vlan:<network>`. */
export const VLAN_ALIAS_PREFIX = 'vmlink:vlan:';

/** Bytes VXLAN adds around a frame on an IPv4 underlay (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14). */
export const VXLAN_OVERHEAD_V4 = 50;
/** Bytes VXLAN adds on an IPv6 underlay. */
export const VXLAN_OVERHEAD_V6 = 70;

/** The 802.1Q device of `trunk` for VLAN `id`: `TRUNK.ID` when it fits 15 chars, else `vl<8 hex of trunk>.<id>`. */
export function vlanDeviceName(trunk: string, id: number): string {
  const plain = `${trunk}.${id}`;
  if (plain.length <= 15) return plain;
  return `vl${createHash('sha256').update(trunk).digest('hex').slice(0, 8)}.${id}`;
}

/**
 * The device a VXLAN device sends through (`dev`): the one carrying the VTEP address, else the bridge
 * enslaving the underlay NIC, else the underlay NIC itself.
 */
export function vtepDevice(
  v: VxlanConfig,
  links: ReadonlyMap<string, IpLink>,
  addrs: readonly IpAddr[],
): string {
  const holder = addrs.find((a) => a.local === v.local)?.dev;
  if (holder) return holder;
  const master = links.get(v.underlay)?.master;
  if (master && links.get(master)?.kind === 'bridge') return master;
  return v.underlay;
}

/** Ways an existing VXLAN device differs from what it must be; any of these needs the device re-created. */
export function vxlanDrift(link: IpLink, v: VxlanConfig, dev: string): string[] {
  const x = link.vxlan;
  if (!x) return [`${link.name} is not a vxlan device`];
  const out: string[] = [];
  if (x.vni !== v.vni) out.push(`vxlan ${link.name} has VNI ${x.vni}, want ${v.vni}`);
  if (x.local !== v.local) out.push(`vxlan ${link.name} has local ${x.local ?? 'unset'}, want ${v.local}`);
  if (x.port !== v.port) out.push(`vxlan ${link.name} has port ${x.port}, want ${v.port}`);
  if (x.dev !== dev) out.push(`vxlan ${link.name} sends through ${x.dev ?? 'any device'}, want ${dev}`);
  if (x.learning) out.push(`vxlan ${link.name} learns remote MACs, want nolearning`);
  return out;
}

/** Remote VTEPs of a VXLAN device's head-end replication entries (its own all-zeros FDB entries). */
export function floodRemotes(entries: readonly FdbEntry[]): string[] {
  return entries.filter((e) => e.mac === FLOOD_MAC && e.dst !== undefined && !e.master).map((e) => e.dst!);
}

/** What to change so `dev` replicates to exactly `want`: stale entries deleted first, missing ones appended. */
export function fdbSync(
  dev: string,
  want: readonly string[],
  have: readonly string[],
): { add: string[]; del: string[]; cmds: BridgeCommand[] } {
  const wantSet = new Set(want);
  const haveSet = new Set(have);
  const del = [...haveSet].filter((r) => !wantSet.has(r)).sort();
  const add = [...wantSet].filter((r) => !haveSet.has(r)).sort();
  return {
    add,
    del,
    cmds: [...del.map((r) => bridgeCmd.fdbDel(dev, r)), ...add.map((r) => bridgeCmd.fdbAppend(dev, r))],
  };
}

/** FDB problems of a VXLAN device: remote VTEPs missing, stale entries for hosts that left. */
export function fdbProblems(dev: string, want: readonly string[], have: readonly string[]): string[] {
  const { add, del } = fdbSync(dev, want, have);
  return [
    ...add.map((r) => `FDB entry for remote VTEP ${r} missing on ${dev}`),
    ...del.map((r) => `stale FDB entry for VTEP ${r} on ${dev}`),
  ];
}

/** One VLAN membership of a bridge port as `bridge -json vlan show` reports it. */
export interface PortVlan {
  vid: number;
  pvid: boolean;
  untagged: boolean;
}

/** Parses `bridge -json vlan show dev DEV` into the memberships of that device. */
export function parsePortVlans(text: string, dev: string): PortVlan[] {
  const t = text.trim();
  if (t === '') return [];
  const v: unknown = JSON.parse(t);
  if (!Array.isArray(v)) return [];
  const out: PortVlan[] = [];
  for (const o of v as Record<string, unknown>[]) {
    if (o?.ifname !== dev || !Array.isArray(o.vlans)) continue;
    for (const e of o.vlans as Record<string, unknown>[]) {
      const flags = Array.isArray(e.flags) ? (e.flags as string[]) : [];
      const from = Number(e.vlan);
      const to = typeof e.vlanEnd === 'number' ? e.vlanEnd : from;
      for (let vid = from; vid <= to; vid++)
        out.push({ vid, pvid: flags.includes('PVID'), untagged: flags.includes('Egress Untagged') });
    }
  }
  return out;
}

/** The VLAN memberships a port must have: its access VLAN as pvid untagged, its trunk VLANs tagged. */
export function wantedPortVlans(port: PortConfig): PortVlan[] {
  const out: PortVlan[] = [];
  if (port.vlan !== undefined) out.push({ vid: port.vlan, pvid: true, untagged: true });
  for (const vid of [...new Set(port.trunks ?? [])].sort((a, b) => a - b)) {
    if (vid !== port.vlan) out.push({ vid, pvid: false, untagged: false });
  }
  return out;
}

/** `bridge` commands that give a port of a vlan_filtering bridge exactly `want` (default VLAN 1 included). */
export function portVlanCommands(
  tap: string,
  have: readonly PortVlan[],
  want: readonly PortVlan[],
): BridgeCommand[] {
  const wantBy = new Map(want.map((w) => [w.vid, w]));
  const haveBy = new Map(have.map((h) => [h.vid, h]));
  const cmds: BridgeCommand[] = [];
  for (const h of have) {
    const w = wantBy.get(h.vid);
    // A flag cannot be cleared by `vlan add`: drop the membership and add it back.
    if (!w || (h.pvid && !w.pvid) || (h.untagged && !w.untagged)) cmds.push(bridgeCmd.vlanDel(tap, h.vid));
  }
  for (const w of want) {
    const h = haveBy.get(w.vid);
    if (h && h.pvid === w.pvid && h.untagged === w.untagged) continue;
    cmds.push(bridgeCmd.vlanAdd(tap, w.vid, { pvid: w.pvid, untagged: w.untagged }));
  }
  return cmds;
}

/** The member device (vxlan or vlan) a network has on its bridge, if any. */
export function memberDevice(cfg: NetworkConfig): { name: string; kind: 'vxlan' | 'vlan' } | undefined {
  if (cfg.mode === 'vxlan' && cfg.vxlan) return { name: cfg.vxlan.device, kind: 'vxlan' };
  if (cfg.mode === 'vlan' && cfg.vlan)
    return { name: vlanDeviceName(cfg.vlan.trunk, cfg.vlan.id), kind: 'vlan' };
  return undefined;
}
