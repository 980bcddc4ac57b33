// OpenFlow tables of vmlink's OVS bridges, built (pure) from the ports a bridge has. Switching itself
// stays OVS's NORMAL action (MAC learning, access tag push/pop, trunk filtering); these flows make the
// VLAN policy explicit and visible (`vmlink network show NAME --flows`) and default-deny anything else:
//   - an access port never injects tagged frames (802.1Q hopping);
//   - a trunk port only carries the VLANs vmlink put on it (no untagged/native traffic);
//   - a port vmlink does not know (added by hand) and the bridge's own LOCAL port switch nothing;
//   - a guarded VM port lets out only its own MAC and addresses (port-guard.ts).
import type { Ovs, OvsPort } from '../../../exec/ovs.js';
import { InvalidRequestError } from '../../../shared/errors.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { NIC_SECURITY_GROUPS_MAX, type SecurityGroupConfig } from '../../../shared/security-groups.js';
import { CT_ZONE, GUARD_DHCP, GUARD_IPS, GUARD_MAC, SG_KEY_PREFIX } from './names.js';
import { guardFlows, type PortGuard, resolveGuard } from './port-guard.js';
import {
  CT_ZONE_MAX,
  CT_ZONE_MIN,
  type GroupedPort,
  securityGroupFlows,
  TO_DISPATCH,
  TO_EGRESS,
} from './security-group-flows.js';

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
  /** Security groups of a guarded VM port and its conntrack zone (security-group-flows.ts). */
  groups?: { names: string[]; zone: number };
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
      const groups = portGroups(p.externalIds);
      return {
        name: p.name,
        ofport: p.ofport!,
        ...(p.tag !== undefined ? { tag: p.tag } : {}),
        ...(p.trunks.length ? { trunks: p.trunks } : {}),
        ...(p.type === 'vxlan' ? { tunnel: true } : {}),
        ...(mac ? { guard: resolveGuard(mac, ips, dhcp, reserved.get(mac) ?? []) } : {}),
        // Groups need the guard (ingress is found by its MAC; replies trust its sources).
        ...(mac && groups ? { groups } : {}),
      };
    })
    .sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The security groups and conntrack zone ensurePort recorded on a port; undefined without groups or a valid zone. */
export function portGroups(ids: Readonly<Record<string, string>>): FlowPort['groups'] {
  const names: string[] = [];
  for (let i = 0; i < NIC_SECURITY_GROUPS_MAX; i++) {
    const n = ids[`${SG_KEY_PREFIX}${i}`];
    if (n) names.push(n);
  }
  if (names.length === 0) return undefined;
  const zone = Number(ids[CT_ZONE]);
  // A zone that is not one (a hand-edited database): -1, and the port passes nothing (security-group-flows.ts).
  return { names, zone: Number.isInteger(zone) && zone >= CT_ZONE_MIN && zone <= CT_ZONE_MAX ? zone : -1 };
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
 * VM ports drop. With ports in security groups (`groups`: the groups applied on this host), accepted frames go
 * through the security group tables instead of straight to NORMAL (security-group-flows.ts).
 */
export function buildFlows(
  role: BridgeRole,
  ports: readonly FlowPort[],
  groups: ReadonlyMap<string, SecurityGroupConfig> = new Map(),
): string[] {
  const grouped: GroupedPort[] = ports
    .filter((p) => p.guard && p.groups)
    .map((p) => ({ ofport: p.ofport, mac: p.guard!.mac, zone: p.groups!.zone, groups: p.groups!.names }));
  // Without grouped ports the table stays exactly what it was before security groups.
  const accept = grouped.length ? TO_DISPATCH : 'NORMAL';
  const out: string[] = [];
  for (const p of ports)
    if (p.guard)
      for (const [prio, match, actions] of guardFlows(p.ofport, p.guard, p.groups ? TO_EGRESS : accept))
        out.push(flow(prio, match, actions));
  if (role === 'overlay') {
    for (const p of ports) {
      if (p.tunnel) continue;
      out.push(flow(300, `in_port=${p.ofport},vlan_tci=0x1000/0x1000`, 'drop'));
    }
    out.push(flow(0, '', accept));
  } else {
    for (const p of ports) {
      if (p.tag !== undefined) {
        out.push(flow(300, `in_port=${p.ofport},vlan_tci=0x1000/0x1000`, 'drop'));
        out.push(flow(200, `in_port=${p.ofport}`, accept));
      } else if (p.trunks?.length) {
        for (const v of [...p.trunks].sort((a, b) => a - b))
          out.push(flow(200, `in_port=${p.ofport},dl_vlan=${v}`, accept));
        out.push(flow(100, `in_port=${p.ofport}`, 'drop'));
      }
    }
    out.push(flow(0, '', 'drop'));
  }
  out.push(...securityGroupFlows(grouped, groups, FLOW_COOKIE));
  return out;
}

// vmlink's cookie, alone or under a security group's 32 bits (security-group-flows.ts: groupCookie).
const OUR_COOKIE = new RegExp(`cookie=0x(?:[0-9a-f]{1,8})?${FLOW_COOKIE.slice(2)}\\b`);

/** How many of vmlink's flows a dumped table (one flow per line) holds. */
export function countOurFlows(dumped: readonly string[]): number {
  return dumped.filter((l) => OUR_COOKIE.test(l)).length;
}

/** Flow policy of a network's bridge. */
export function roleOf(cfg: NetworkConfig): BridgeRole {
  return cfg.mode === 'vlan' ? 'vlan' : 'overlay';
}

/**
 * Makes the bridge's flow table exactly `flows` in one OpenFlow 1.4 bundle (`ovs-ofctl --bundle replace-flows`):
 * ovs-ofctl sends only the flows that differ (unchanged flows keep their counters) and ovs-vswitchd commits them
 * together, so a rule change never shows packets a table with some of its flows replaced and others not.
 */
export async function replaceFlowsAtomic(ovs: Ovs, bridge: string, flows: readonly string[]): Promise<void> {
  for (const f of flows)
    if (/[\n\r]/.test(f)) throw new InvalidRequestError(`invalid flow ${JSON.stringify(f)}`);
  await ovs.ofctl(['--bundle', 'replace-flows', ovs.mgmt(bridge), '-'], { input: `${flows.join('\n')}\n` });
}
