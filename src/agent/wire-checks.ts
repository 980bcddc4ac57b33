// The checks of an agent action that no single field can make: every device it names is one vmlink owns (its
// derived name for the object it belongs to) and a subnet's addresses lie in it. (Host NIC fields, the uplink,
// trunk and underlay, refuse vmlink's own device names field by field.) The agent takes none of this on trust.
import type { NetworkConfig, NicConfig, VmConfig } from '../shared/model.js';
import type { SecurityGroupConfig } from '../shared/security-groups.js';
import { volumeFileName } from '../shared/storage.js';
import {
  bridgeName,
  cidrContains,
  formatCidr,
  legacyBridgeName,
  legacyOvsVlanBridgeName,
  legacyTapName,
  ovsVlanBridgeName,
  parseCidr,
  parseIpv4,
  tapName,
  vxlanDeviceName,
} from '../spec/net.js';

/** One problem of an action: where it is (path below the checked object) and what is wrong. */
export interface WireIssue {
  path: (string | number)[];
  message: string;
}

const oneOf = (names: readonly string[]) => [...new Set(names)].join(' or ');

/** The bridges network `net` may be realised on: its own (readable or legacy), or its trunk NIC's OVS bridge. */
export function ownedNetworkBridges(net: Pick<NetworkConfig, 'name' | 'backend' | 'vlan'>): string[] {
  const own = [bridgeName(net.name), legacyBridgeName(net.name)];
  const trunk = net.backend === 'ovs' ? net.vlan?.trunk : undefined;
  return trunk === undefined ? own : [...own, ovsVlanBridgeName(trunk), legacyOvsVlanBridgeName(trunk)];
}

/** Whether `bridge` is an OVS vlan bridge by vmlink's scheme (`vlo-<trunk NIC>` or its hashed form). */
function isOvsVlanBridge(bridge: string): boolean {
  if (!bridge.startsWith('vlo-')) return false;
  const trunk = bridge.slice('vlo-'.length);
  return ovsVlanBridgeName(trunk) === bridge || /^[0-9a-f]{8}$/.test(trunk);
}

/** Problems of a network config as an action carries it (device ownership and subnet consistency). */
export function networkConfigIssues(net: NetworkConfig): WireIssue[] {
  const issues: WireIssue[] = [];
  const bridges = ownedNetworkBridges(net);
  if (!bridges.includes(net.bridge))
    issues.push({
      path: ['bridge'],
      message: `network ${net.name} may only be realised on its own bridge ${oneOf(bridges)}, not ${net.bridge}`,
    });
  if (net.vxlan && net.vxlan.device !== vxlanDeviceName(net.name))
    issues.push({
      path: ['vxlan', 'device'],
      message: `network ${net.name}'s VXLAN device is ${vxlanDeviceName(net.name)}, not ${net.vxlan.device}`,
    });
  const s = net.subnet;
  const cidr = s ? parseCidr(s.cidr) : undefined;
  if (s && cidr) {
    if (formatCidr(cidr) !== s.cidr)
      issues.push({ path: ['subnet', 'cidr'], message: `${s.cidr} has host bits set` });
    if (s.prefixLength !== cidr.prefix)
      issues.push({
        path: ['subnet', 'prefixLength'],
        message: `must be ${cidr.prefix}, the prefix of ${s.cidr}`,
      });
    // Inside the subnet, and neither its network nor its broadcast address.
    const inside = (ip: string) => {
      const n = parseIpv4(ip);
      return n !== undefined && cidrContains(cidr, n) && n !== cidr.network && n !== cidr.broadcast;
    };
    const addrs: Array<[string, (string | number)[]]> = [
      [s.gateway, ['subnet', 'gateway']],
      [s.dhcpStart, ['subnet', 'dhcpStart']],
      [s.dhcpEnd, ['subnet', 'dhcpEnd']],
      ...s.reservations.map((r, i): [string, (string | number)[]] => [
        r.ip,
        ['subnet', 'reservations', i, 'ip'],
      ]),
      ...net.forwards.map((f, i): [string, (string | number)[]] => [f.targetIp, ['forwards', i, 'targetIp']]),
    ];
    for (const [ip, path] of addrs)
      if (!inside(ip)) issues.push({ path, message: `${ip} is not a host address of ${s.cidr}` });
    if ((parseIpv4(s.dhcpStart) ?? 0) > (parseIpv4(s.dhcpEnd) ?? 0))
      issues.push({
        path: ['subnet', 'dhcpEnd'],
        message: `DHCP range ${s.dhcpStart}-${s.dhcpEnd} is empty`,
      });
  }
  return issues;
}

/** Problems of one VM NIC: its tap is the one vmlink derives for it, its bridge one of its network's. */
function nicIssues(vm: string, index: number, nic: NicConfig): WireIssue[] {
  const issues: WireIssue[] = [];
  const taps = [tapName(vm, index), legacyTapName(vm, index)];
  if (!taps.includes(nic.tap))
    issues.push({
      path: ['tap'],
      message: `NIC ${index} of VM ${vm} has tap ${oneOf(taps)}, not ${nic.tap}`,
    });
  const bridges = [bridgeName(nic.network), legacyBridgeName(nic.network)];
  if (!bridges.includes(nic.bridge) && !(nic.backend === 'ovs' && isOvsVlanBridge(nic.bridge)))
    issues.push({
      path: ['bridge'],
      message: `NIC ${index} of VM ${vm} may only join network ${nic.network}'s bridge ${oneOf(bridges)}${nic.backend === 'ovs' ? ' or an OVS vlan bridge (vlo-...)' : ''}, not ${nic.bridge}`,
    });
  // A planner sends a DHCP reservation only where the port guard has use for it, never beside a fixed address.
  if (
    nic.reservedIp !== undefined &&
    (nic.staticIp !== undefined || nic.portSecurity === false || nic.trunk !== undefined)
  )
    issues.push({
      path: ['reservedIp'],
      message: `NIC ${index} of VM ${vm}: a DHCP reservation (reservedIp) goes only on a guarded NIC without a fixed address or trunk`,
    });
  return issues;
}

/** Problems of a VM config as an action carries it: every NIC's tap and bridge. */
export function vmConfigIssues(vm: VmConfig): WireIssue[] {
  return vm.nics.flatMap((nic, i) =>
    nicIssues(vm.name, i, nic).map((x) => ({ ...x, path: ['nics', i, ...x.path] })),
  );
}

/**
 * Problems of a security group as an action carries it, the spec's rules over again: ports only with tcp/udp and
 * low end first, at most one remote, a cidr written as its network address, member MACs distinct.
 */
export function securityGroupConfigIssues(group: SecurityGroupConfig): WireIssue[] {
  const issues: WireIssue[] = [];
  group.rules.forEach((r, i) => {
    if (r.ports && r.protocol !== 'tcp' && r.protocol !== 'udp')
      issues.push({
        path: ['rules', i, 'ports'],
        message: `ports need protocol tcp or udp, not ${r.protocol}`,
      });
    r.ports?.forEach((p, k) => {
      if (p.from > p.to)
        issues.push({ path: ['rules', i, 'ports', k], message: `range ${p.from}-${p.to} is empty` });
    });
    if (r.cidr !== undefined && r.group !== undefined)
      issues.push({ path: ['rules', i], message: 'a rule has at most one remote: cidr or group' });
    const c = r.cidr === undefined ? undefined : parseCidr(r.cidr);
    if (r.cidr !== undefined && (!c || formatCidr(c) !== r.cidr))
      issues.push({ path: ['rules', i, 'cidr'], message: `${r.cidr} is not a network address` });
  });
  if (new Set(group.memberMacs).size !== group.memberMacs.length)
    issues.push({ path: ['memberMacs'], message: 'lists a MAC twice' });
  return issues;
}

/** Where pools live unless the agent is started with other roots (`vmlink agent --pool-root DIR`). */
export const DEFAULT_POOL_ROOT = '/var/lib/vmlink/pools';

/** Whether `path` lies strictly below `root` (both absolute, normalised by the wire's path pattern). */
function below(path: string, root: string): boolean {
  const r = root.endsWith('/') ? root : `${root}/`;
  return path.startsWith(r) && path.length > r.length;
}

/**
 * Problems of a pool directory an action names: root runs the backends, so a pool may only be a directory below
 * one of the roots the agent was started with (never /etc, never a root itself, which holds other pools).
 */
export function poolPathIssues(path: string, roots: readonly string[]): WireIssue[] {
  if (roots.some((r) => below(path, r))) return [];
  return [
    {
      path: ['path'],
      message: `pool directory ${path} is not below ${oneOf(roots)}: put the pool there, or start the agent with --pool-root naming its parent`,
    },
  ];
}

/** Problems of a file an image import reads: only files below the agent's import roots (root reads them). */
export function importPathIssues(path: string, roots: readonly string[]): WireIssue[] {
  if (roots.some((r) => below(path, r))) return [];
  return [
    {
      path: ['sourcePath'],
      message: `${path} is not below ${oneOf(roots)}: copy the image there first (the agent reads files for import only from those directories)`,
    },
  ];
}

/**
 * Problems of a VM's `file` disk sources: each must be a volume file directly inside a pool directory this agent
 * holds, named as the pool names its volumes, so a VM step can never make root open an arbitrary file for QEMU.
 * `held` maps a pool's name to its directory on this host.
 */
export function diskSourceIssues(vm: VmConfig, held: ReadonlyMap<string, string>): WireIssue[] {
  const sources = [
    ...vm.disks.map((d, i) => [d.source, ['disks', i, 'source']] as const),
    [vm.rootSource, ['rootSource']] as const,
  ];
  const issues: WireIssue[] = [];
  for (const [src, at] of sources) {
    if (src?.kind !== 'file') continue;
    const dir = held.get(src.pool);
    if (dir === undefined) {
      issues.push({
        path: [...at, 'pool'],
        message: `pool ${src.pool} is not held by this host (its agent has no record of it): apply the spec that declares it first`,
      });
      continue;
    }
    const want = `${dir.replace(/\/$/, '')}/${volumeFileName(src.volume, src.format)}`;
    if (src.path !== want)
      issues.push({
        path: [...at, 'path'],
        message: `volume ${src.volume} of pool ${src.pool} is ${want} on this host, not ${src.path}`,
      });
  }
  return issues;
}
