// Device names across the switch from hashed names (`vlb-1a2b3c4d`) to readable ones (`vlb-natnet`): the names a
// config derives from its own object names never count as a change, and devices that exist under their old names
// keep them, so upgrading vmlink restarts no VM and rebuilds no network. The same holds for the OVS vlan bridge of
// a trunk NIC (`vlo-<hash>` -> `vlo-eth1`).
import type { HostReport, NetworkConfig, NicConfig, VmConfig } from '../shared/model.js';
import {
  bridgeName,
  legacyBridgeName,
  legacyOvsVlanBridgeName,
  legacyTapName,
  ovsVlanBridgeName,
  tapName,
} from '../spec/net.js';
import type { HostDesired } from './resolve.js';

/** `net` with its bridge name in the one form hashes see (the legacy form, whichever of the two derived it has). */
export function canonicalNetworkNames(net: NetworkConfig): NetworkConfig {
  if (net.bridge === bridgeName(net.name)) return { ...net, bridge: legacyBridgeName(net.name) };
  const trunk = net.backend === 'ovs' ? net.vlan?.trunk : undefined;
  if (trunk !== undefined && net.bridge === ovsVlanBridgeName(trunk))
    return { ...net, bridge: legacyOvsVlanBridgeName(trunk) };
  return net;
}

/** A NIC's bridge in the form hashes see: derived from its network's name, or an OVS vlan bridge's from its NIC. */
function canonicalNicBridge(nic: NicConfig): string {
  if (nic.bridge === bridgeName(nic.network)) return legacyBridgeName(nic.network);
  // `vlo-<nic>` names its trunk NIC: the NIC config does not carry it, the name does.
  if (nic.backend === 'ovs' && nic.bridge.startsWith('vlo-')) {
    const trunk = nic.bridge.slice('vlo-'.length);
    if (ovsVlanBridgeName(trunk) === nic.bridge) return legacyOvsVlanBridgeName(trunk);
  }
  return nic.bridge;
}

/** `vm` with its taps and bridges in the one form hashes see (see `canonicalNetworkNames`). */
export function canonicalVmNames(vm: VmConfig): VmConfig {
  return {
    ...vm,
    nics: vm.nics.map(
      (n, i): NicConfig => ({
        ...n,
        tap: n.tap === tapName(vm.name, i) ? legacyTapName(vm.name, i) : n.tap,
        bridge: canonicalNicBridge(n),
      }),
    ),
  };
}

/**
 * `want` with the bridges a host already has under their legacy names kept: a network observed on its legacy bridge
 * stays on it, an OVS vlan bridge observed under its trunk NIC's legacy name stays the bridge of every vlan network
 * on that NIC (new ones included), and the NICs of those networks attach to it. New bridges get readable names.
 */
export function adoptObservedBridges(want: HostDesired, seen: HostReport | undefined): HostDesired {
  // Readable bridge name -> the legacy name the host has.
  const kept = new Map<string, string>();
  const seenBridges = new Set((seen?.networks ?? []).map((o) => o.bridge));
  for (const o of seen?.networks ?? [])
    if (o.bridge === legacyBridgeName(o.name) && o.bridge !== bridgeName(o.name))
      kept.set(bridgeName(o.name), o.bridge);
  for (const n of want.networks) {
    const trunk = n.backend === 'ovs' && n.mode === 'vlan' ? n.vlan?.trunk : undefined;
    if (trunk === undefined) continue;
    const legacy = legacyOvsVlanBridgeName(trunk);
    if (seenBridges.has(legacy) && legacy !== ovsVlanBridgeName(trunk))
      kept.set(ovsVlanBridgeName(trunk), legacy);
  }
  if (!kept.size) return want;
  const keep = (bridge: string) => kept.get(bridge) ?? bridge;
  return {
    ...want,
    networks: want.networks.map((n) => ({ ...n, bridge: keep(n.bridge) })),
    vms: want.vms.map((vm) => ({
      ...vm,
      nics: vm.nics.map((nic) => ({ ...nic, bridge: keep(nic.bridge) })),
    })),
  };
}
