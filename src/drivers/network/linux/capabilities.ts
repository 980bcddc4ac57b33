// The kernel feature probe of the linux backend, and the refusals it grounds: a mode or a VLAN port
// this host's kernel cannot realise is refused before any change, naming the remedy.
import { randomBytes } from 'node:crypto';
import { Ip, type IpCommand, ipCmd } from '../../../exec/ip.js';
import type { Runner } from '../../../exec/runner.js';
import { UnsupportedError } from '../../../shared/errors.js';
import { VXLAN_PORT } from '../../../shared/limits.js';
import type { HostCapabilities, NetworkConfig } from '../../../shared/model.js';
import type { PortConfig } from '../types.js';

/** Kernel feature names reported by `capabilities()`. */
export const NETWORK_FEATURES = [
  'vlan',
  'vxlan',
  'macvlan',
  'bond',
  'geneve',
  'bridgeVlanFiltering',
  'nftables',
  'tap',
] as const;

/** Remedy named when this host's kernel cannot do a VLAN thing the linux backend would need. */
const OVS_REMEDY =
  "use backend: ovs for vlan networks (Open vSwitch's userspace datapath does VLANs without kernel support)";

/**
 * Probes kernel features by creating one device of each kind in a scratch namespace `vlcap-<random>`,
 * deleted afterwards (`ip` manages namespaces from the driver's own namespace).
 */
export async function probeNetworkCapabilities(runner: Runner, ip: Ip): Promise<HostCapabilities['network']> {
  const ns = `vlcap-${randomBytes(4).toString('hex')}`;
  const caps: Record<string, boolean> = Object.fromEntries(NETWORK_FEATURES.map((f) => [f, false]));
  await ip.namespaces.add(ns);
  try {
    const inNs = new Ip(runner, ns);
    const tryCmd = async (cmd: IpCommand) => (await inNs.exec(cmd, { allowFailure: true })).code === 0;
    await inNs.exec(ipCmd.linkAdd({ name: 'p0', kind: 'veth', peer: 'p1' }));
    caps.vlan = await tryCmd(ipCmd.linkAdd({ name: 'v0', kind: 'vlan', link: 'p0', vlanId: 10 }));
    caps.vxlan = await tryCmd(
      ipCmd.linkAdd({ name: 'x0', kind: 'vxlan', vni: 42, dstport: VXLAN_PORT, local: '127.0.0.1' }),
    );
    caps.macvlan = await tryCmd(ipCmd.linkAdd({ name: 'm0', kind: 'macvlan', link: 'p0' }));
    caps.bond = await tryCmd(ipCmd.linkAdd({ name: 'b0', kind: 'bond' }));
    caps.geneve = await tryCmd(ipCmd.linkAdd({ name: 'g0', kind: 'geneve', vni: 42, remote: '192.0.2.1' }));
    caps.bridgeVlanFiltering = await tryCmd(
      ipCmd.linkAdd({ name: 'br0', kind: 'bridge', vlanFiltering: true }),
    );
    caps.tap = await tryCmd(ipCmd.tuntapAdd({ name: 't0', mode: 'tap', vnetHdr: true }));
    caps.nftables =
      (
        await runner.run(['nft', '-f', '-'], {
          netns: ns,
          input: 'table inet vlcap {}\n',
          allowFailure: true,
        })
      ).code === 0;
  } finally {
    await ip.namespaces.del(ns);
  }
  return caps;
}

/** Network modes the linux backend can realise with these kernel features. */
export function modesSupported(caps: HostCapabilities['network']): NetworkConfig['mode'][] {
  return [
    'nat',
    'bridge',
    'isolated',
    ...(caps.vxlan ? (['vxlan'] as const) : []),
    ...(caps.vlan ? (['vlan'] as const) : []),
  ];
}

/** Refuses a mode this host's kernel cannot realise, naming the remedy. */
export function requireMode(cfg: NetworkConfig, caps: HostCapabilities['network']): void {
  if (cfg.mode === 'vlan' && !caps.vlan)
    throw new UnsupportedError(
      `network ${cfg.name}: this host's kernel has no 802.1Q VLAN devices; ${OVS_REMEDY}`,
      `networks.${cfg.name}.backend`,
    );
  if (cfg.mode === 'vxlan' && !caps.vxlan)
    throw new UnsupportedError(
      `network ${cfg.name}: this host's kernel has no VXLAN devices; use backend: ovs for vxlan networks`,
      `networks.${cfg.name}.backend`,
    );
}

/** Refuses a VLAN access or trunk port where the kernel has no bridge vlan_filtering. */
export function requireVlanFiltering(port: PortConfig, caps: HostCapabilities['network']): void {
  if (caps.bridgeVlanFiltering) return;
  const trunks = port.trunks ?? [];
  const what = trunks.length ? `trunk port (VLANs ${trunks.join(', ')})` : `access port (VLAN ${port.vlan})`;
  throw new UnsupportedError(
    `port ${port.tap}: a VLAN ${what} on the linux backend needs bridge vlan_filtering, which this host's kernel lacks; ${OVS_REMEDY}`,
    `ports/${port.tap}`,
  );
}
