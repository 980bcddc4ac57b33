// VM ports of the OVS backend: persistent taps (or a lab's veth ends) as access or trunk ports of a
// network's OVS bridge, with the VLANs asked for recorded in external_ids so checks can tell drift.
import { assertIfName, type Ip } from '../../../exec/ip.js';
import { type Ovs, type OvsPort, type VsctlCommand, vsctlCmd } from '../../../exec/ovs.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../../shared/errors.js';
import { isVlanId, VLAN_ID_MAX, VLAN_ID_MIN } from '../../../shared/limits.js';
import { Reverter } from '../../../shared/revert.js';
import { NIC_SECURITY_GROUPS_MAX } from '../../../shared/security-groups.js';
import type { OpContext, PortConfig } from '../types.js';
import type { OvsDaemons } from './daemon.js';
import {
  CT_ZONE,
  GUARD_DHCP,
  GUARD_IPS,
  GUARD_MAC,
  ROLE,
  SG_KEY_PREFIX,
  WANT_TAG,
  WANT_TRUNKS,
} from './names.js';
import { validatePortSecurity } from './port-guard.js';
import { CT_ZONE_MAX, CT_ZONE_MIN } from './security-group-flows.js';
import { assertGroupName } from './security-group-state.js';
import type { OvsNetworkState, OvsStateStore } from './state.js';

/** What port operations need from the driver. */
export interface OvsPortHost {
  ip: Ip;
  ovs: Ovs;
  daemons: OvsDaemons;
  states: OvsStateStore;
  /** Starts or adopts the OVS daemons. */
  ready(ctx?: OpContext): Promise<void>;
  /** Rebuilds a bridge's OpenFlow table from its ports. */
  syncFlows(bridge: string, states: OvsNetworkState[]): Promise<void>;
}

/** Refuses a port config the OVS backend cannot realise (VLAN ids, access and trunk at once), naming the port. */
export function validateOvsPort(port: PortConfig): void {
  assertIfName(port.tap, 'tap');
  assertIfName(port.bridge, 'bridge');
  if (port.vlan !== undefined && port.trunks !== undefined)
    throw new InvalidRequestError(`port ${port.tap}: either an access VLAN or trunks, not both`, 'tap');
  for (const v of [...(port.vlan === undefined ? [] : [port.vlan]), ...(port.trunks ?? [])])
    if (!isVlanId(v))
      throw new InvalidRequestError(
        `port ${port.tap}: VLAN ${v} out of range ${VLAN_ID_MIN}-${VLAN_ID_MAX}`,
        'tap',
      );
  if (port.trunks !== undefined && port.trunks.length === 0)
    throw new InvalidRequestError(`port ${port.tap}: a trunk port needs at least one VLAN`, 'tap');
  if (port.security) validatePortSecurity(port.tap, port.security);
  const groups = port.securityGroups ?? [];
  if (groups.length) {
    // Ingress is found by the port's MAC and replies trust its sources: groups need port security.
    if (!port.security || port.trunks !== undefined)
      throw new InvalidRequestError(
        `port ${port.tap}: security groups need port security on an access port`,
        'tap',
      );
    if (groups.length > NIC_SECURITY_GROUPS_MAX || new Set(groups).size !== groups.length)
      throw new InvalidRequestError(
        `port ${port.tap}: at most ${NIC_SECURITY_GROUPS_MAX} distinct security groups`,
        'tap',
      );
    for (const g of groups) assertGroupName(g);
  }
}

/**
 * The conntrack zone of a port with groups: the one it has, unless another port of this OVS took it, else the
 * lowest free one. Zones belong to the datapath (every bridge of the instance), so all ports count.
 */
export function allocateZone(tap: string, ports: readonly OvsPort[]): number {
  const used = new Map<number, string>();
  for (const p of ports) {
    const z = Number(p.externalIds[CT_ZONE]);
    if (p.externalIds[CT_ZONE] && Number.isInteger(z)) used.set(z, p.name);
  }
  const mine = Number(ports.find((p) => p.name === tap)?.externalIds[CT_ZONE]);
  if (Number.isInteger(mine) && mine >= CT_ZONE_MIN && mine <= CT_ZONE_MAX && used.get(mine) === tap)
    return mine;
  for (let z = CT_ZONE_MIN; z <= CT_ZONE_MAX; z++) if (!used.has(z)) return z;
  throw new ConflictError(`port ${tap}: no conntrack zone left for security groups`, tap);
}

/** The external_ids recording a port's groups and zone ('' clears what a port had before). */
function groupIds(port: PortConfig, zone: number | undefined): Record<string, string> {
  const groups = port.securityGroups ?? [];
  const ids: Record<string, string> = { [CT_ZONE]: zone === undefined ? '' : String(zone) };
  for (let i = 0; i < NIC_SECURITY_GROUPS_MAX; i++) ids[`${SG_KEY_PREFIX}${i}`] = groups[i] ?? '';
  return ids;
}

/**
 * Creates the persistent tap (vnet_hdr) if missing and makes it an access (`vlan`) or trunk (`trunks`)
 * port of its network's bridge, guarded when it has `security` (port-guard.ts); `port` is validated and the caller
 * holds the driver's queue.
 */
export async function attachPort(host: OvsPortHost, port: PortConfig, ctx?: OpContext): Promise<void> {
  const states = await host.states.readAll();
  if (!states.some((s) => s.config.bridge === port.bridge)) throw new NotFoundError('bridge', port.bridge);
  await host.ready(ctx);
  if (!(await host.ovs.bridges()).some((b) => b.name === port.bridge))
    throw new NotFoundError('bridge', port.bridge);
  const r = new Reverter();
  try {
    let link = await host.ip.link.get(port.tap);
    // A veth end is accepted as is (labs attach namespace "VMs" that way); anything else must be a tap.
    if (link && link.kind !== 'tun' && link.kind !== 'veth')
      throw new ConflictError(`device ${port.tap} exists and is not a tap`, port.tap);
    if (!link) {
      await host.ip.tuntap.add({ name: port.tap, mode: 'tap', vnetHdr: true });
      r.add(() => host.ip.tuntap.del(port.tap));
      link = await host.ip.link.get(port.tap);
    }
    if (link?.mtu !== port.mtu || !link.up) await host.ip.link.set(port.tap, { mtu: port.mtu, up: true });
    const all = await host.ovs.ports();
    const existing = all.find((p) => p.name === port.tap);
    const zone = port.securityGroups?.length ? allocateZone(port.tap, all) : undefined;
    // A zone new to this port may hold another port's old connections (same addresses after a reuse): they must
    // not count as established here.
    if (zone !== undefined && existing?.externalIds[CT_ZONE] !== String(zone))
      await host.ovs.appctl(['dpctl/flush-conntrack', `zone=${zone}`]);
    const cmds: VsctlCommand[] = [];
    if (existing?.bridge && existing.bridge !== port.bridge) cmds.push(...vsctlCmd.delPort(port.tap));
    const trunks = port.trunks ? [...new Set(port.trunks)].sort((a, b) => a - b) : undefined;
    cmds.push(
      ...vsctlCmd.addPort(port.bridge, port.tap, {
        ...(port.vlan !== undefined ? { tag: port.vlan, vlanMode: 'access' as const } : {}),
        ...(trunks ? { trunks, vlanMode: 'trunk' as const } : {}),
        externalIds: {
          [ROLE]: 'vm',
          [WANT_TAG]: port.vlan === undefined ? '' : String(port.vlan),
          [WANT_TRUNKS]: trunks ? trunks.join('-') : '',
          // Port security, read back by the flow builder (flows.ts): '' = unguarded.
          [GUARD_MAC]: port.security?.mac ?? '',
          [GUARD_IPS]: [...new Set(port.security?.addresses ?? [])].join('_'),
          [GUARD_DHCP]: port.security?.dhcp ? '1' : '',
          // Security groups, read back by the flow builder (flows.ts portGroups).
          ...groupIds(port, zone),
        },
      }),
    );
    const clear: ('tag' | 'trunks' | 'vlan_mode')[] = [];
    if (port.vlan === undefined) clear.push('tag');
    if (!trunks) clear.push('trunks');
    if (port.vlan === undefined && !trunks) clear.push('vlan_mode');
    cmds.push(...vsctlCmd.clearPort(port.tap, clear));
    await host.ovs.vsctl(cmds);
    r.add(() => host.ovs.vsctl(vsctlCmd.delPort(port.tap), { allowFailure: true }));
    await host.syncFlows(port.bridge, states);
    r.success();
  } finally {
    await r.fail();
  }
}

/** Removes the port from OVS and deletes its tap (a veth end is only unplugged); missing is fine; under the queue. */
export async function detachPort(host: OvsPortHost, tap: string, ctx?: OpContext): Promise<void> {
  const link = await host.ip.link.get(tap);
  if (link && link.kind !== 'tun' && link.kind !== 'veth')
    throw new ConflictError(`device ${tap} is not a tap; not deleting it`, tap);
  if ((await host.daemons.pid('ovsdb-server')) !== undefined) {
    const p = (await host.ovs.ports()).find((x) => x.name === tap);
    if (p) {
      await host.ready(ctx);
      await host.ovs.vsctl(vsctlCmd.delPort(tap));
      if (p.bridge) await host.syncFlows(p.bridge, await host.states.readAll());
    }
  }
  if (link?.kind === 'tun') await host.ip.tuntap.del(tap, link.tunType === 'tun' ? 'tun' : 'tap');
}

/** Whether the device exists and is a working port of `bridge` with the VLAN settings ensurePort gave it. */
export async function portAttached(host: OvsPortHost, tap: string, bridge: string): Promise<boolean> {
  assertIfName(tap, 'tap');
  const link = await host.ip.link.get(tap);
  if (!link) return false;
  if ((await host.daemons.pid('ovs-vswitchd')) === undefined) return false;
  if ((await host.daemons.pid('ovsdb-server')) === undefined) return false;
  const p = (await host.ovs.ports()).find((x) => x.name === tap);
  if (!p || p.bridge !== bridge || p.error || (p.ofport ?? -1) < 1) return false;
  const wantTag = p.externalIds[WANT_TAG] ?? '';
  const wantTrunks = p.externalIds[WANT_TRUNKS] ?? '';
  return (
    wantTag === (p.tag === undefined ? '' : String(p.tag)) &&
    wantTrunks === [...p.trunks].sort((a, b) => a - b).join('-')
  );
}
