// OpenFlow tables of vmlink's OVS bridges, built (pure) from the ports a bridge has. Switching itself
// stays OVS's NORMAL action (MAC learning, access tag push/pop, trunk filtering); these flows make the
// VLAN policy explicit and visible (`vmlink network show NAME --flows`) and default-deny anything else:
//   - an access port never injects tagged frames (802.1Q hopping);
//   - a trunk port only carries the VLANs vmlink put on it (no untagged/native traffic);
//   - a port vmlink does not know (added by hand) and the bridge's own LOCAL port switch nothing;
//   - a guarded VM port lets out only its own MAC and addresses (port-guard.ts).
import type { OvsPort } from '../../../exec/ovs.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { GUARD_DHCP, GUARD_IPS, GUARD_MAC } from './names.js';
import { guardFlows, type PortGuard, resolveGuard } from './port-guard.js';

/** Cookie of every flow vmlink installs (`vlnk`), so dumps and checks can tell them apart. */
export const FLOW_COOKIE = '0x766c6e6b';

/** A bridge port as the flow builder needs it. */
export interface FlowPort {
  name: string;
  ofport: number;
  /** Access port VLAN. */
  tag?: number;
  /** Trunk port VLANs (never empty for a trunk: vmlink always lists them). */
  trunks?: number[];
  /** Protected (tunnel) port of an overlay bridge. */
  tunnel?: boolean;
  /** Anti-spoofing of a VM port (absent: unguarded). */
  guard?: PortGuard;
}

/** Which flow policy a bridge gets. */
export type BridgeRole = 'vlan' | 'overlay';

const flow = (priority: number, match: string, actions: string) =>
  `cookie=${FLOW_COOKIE},priority=${priority}${match ? `,${match}` : ''},actions=${actions}`;

/**
 * Ports of `ports` with a usable OpenFlow number, sorted by name (stable output). `reserved`: the DHCP reservations
 * of this host's networks on the bridge, by MAC (what a DHCP NIC's guard pins it to).
 */
export function flowPorts(
  ports: readonly OvsPort[],
  bridge: string,
  reserved: ReadonlyMap<string, readonly string[]> = new Map(),
): FlowPort[] {
  return ports
    .filter((p) => p.bridge === bridge && p.name !== bridge && (p.ofport ?? -1) > 0)
    .map((p) => {
      const mac = p.externalIds[GUARD_MAC];
      const ips = (p.externalIds[GUARD_IPS] ?? '').split('_').filter(Boolean);
      const dhcp = p.externalIds[GUARD_DHCP] === '1';
      return {
        name: p.name,
        ofport: p.ofport!,
        ...(p.tag !== undefined ? { tag: p.tag } : {}),
        ...(p.trunks.length ? { trunks: p.trunks } : {}),
        ...(p.type === 'vxlan' ? { tunnel: true } : {}),
        ...(mac ? { guard: resolveGuard(mac, ips, dhcp, reserved.get(mac) ?? []) } : {}),
      };
    })
    .sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The DHCP reservations (MAC -> addresses) of these networks on `bridge`, where this host serves their DHCP. */
export function reservationsOn(bridge: string, networks: readonly NetworkConfig[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const n of networks)
    if (n.bridge === bridge)
      for (const r of n.subnet?.reservations ?? []) out.set(r.mac, [...(out.get(r.mac) ?? []), r.ip]);
  return out;
}

/**
 * The flow table of a bridge (input of `ovs-ofctl replace-flows`). Guarded ports first (port-guard.ts). vlan: access ports accept only
 * untagged frames, trunk ports only their VLANs, everything else drops. overlay: NORMAL switching
 * (tunnel ports are protected ports, so NORMAL never forwards tunnel to tunnel), tagged frames from
 * VM ports drop.
 */
export function buildFlows(role: BridgeRole, ports: readonly FlowPort[]): string[] {
  const out: string[] = [];
  for (const p of ports)
    if (p.guard)
      for (const [prio, match, actions] of guardFlows(p.ofport, p.guard))
        out.push(flow(prio, match, actions));
  if (role === 'overlay') {
    for (const p of ports) {
      if (p.tunnel) continue;
      out.push(flow(300, `in_port=${p.ofport},vlan_tci=0x1000/0x1000`, 'drop'));
    }
    out.push(flow(0, '', 'NORMAL'));
    return out;
  }
  for (const p of ports) {
    if (p.tag !== undefined) {
      out.push(flow(300, `in_port=${p.ofport},vlan_tci=0x1000/0x1000`, 'drop'));
      out.push(flow(200, `in_port=${p.ofport}`, 'NORMAL'));
    } else if (p.trunks?.length) {
      for (const v of [...p.trunks].sort((a, b) => a - b))
        out.push(flow(200, `in_port=${p.ofport},dl_vlan=${v}`, 'NORMAL'));
      out.push(flow(100, `in_port=${p.ofport}`, 'drop'));
    }
  }
  out.push(flow(0, '', 'drop'));
  return out;
}

/** How many of vmlink's flows a dumped table (one flow per line) holds. */
export function countOurFlows(dumped: readonly string[]): number {
  return dumped.filter((l) => l.includes(`cookie=${FLOW_COOKIE}`)).length;
}

/** Flow policy of a network's bridge. */
export function roleOf(cfg: NetworkConfig): BridgeRole {
  return cfg.mode === 'vlan' ? 'vlan' : 'overlay';
}
