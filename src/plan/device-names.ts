// Device names across the switch from hashed names (`vlb-1a2b3c4d`) to readable ones (`vlb-natnet`): the names a
// config derives from its own object names never count as a change, and devices that exist under their old names
// keep them, so upgrading vmlink restarts no VM and rebuilds no network.
import type { HostReport, NetworkConfig, NicConfig, VmConfig } from '../shared/model.js';
import { bridgeName, legacyBridgeName, legacyTapName, tapName } from '../spec/net.js';
import type { HostDesired } from './resolve.js';

/** `net` with its bridge name in the one form hashes see (the legacy form, whichever of the two derived it has). */
export function canonicalNetworkNames(net: NetworkConfig): NetworkConfig {
  return net.bridge === bridgeName(net.name) ? { ...net, bridge: legacyBridgeName(net.name) } : net;
}

/** `vm` with its taps and bridges in the one form hashes see (see `canonicalNetworkNames`). */
export function canonicalVmNames(vm: VmConfig): VmConfig {
  return {
    ...vm,
    nics: vm.nics.map(
      (n, i): NicConfig => ({
        ...n,
        tap: n.tap === tapName(vm.name, i) ? legacyTapName(vm.name, i) : n.tap,
        bridge: n.bridge === bridgeName(n.network) ? legacyBridgeName(n.network) : n.bridge,
      }),
    ),
  };
}

/**
 * `want` with the bridges a host already has under their legacy names kept: a network observed on `legacy` bridge
 * stays on it, and the NICs of that network attach to it. New networks get readable names.
 */
export function adoptObservedBridges(want: HostDesired, seen: HostReport | undefined): HostDesired {
  const kept = new Map<string, string>();
  for (const o of seen?.networks ?? [])
    if (o.bridge === legacyBridgeName(o.name) && o.bridge !== bridgeName(o.name)) kept.set(o.name, o.bridge);
  if (!kept.size) return want;
  const keep = (network: string, bridge: string) =>
    bridge === bridgeName(network) ? (kept.get(network) ?? bridge) : bridge;
  return {
    ...want,
    networks: want.networks.map((n) => ({ ...n, bridge: keep(n.name, n.bridge) })),
    vms: want.vms.map((vm) => ({
      ...vm,
      nics: vm.nics.map((nic) => ({ ...nic, bridge: keep(nic.network, nic.bridge) })),
    })),
  };
}
