// The port a VM NIC plugs into, as the agent hands it to the network driver: its tap, bridge, VLANs and guard.
import type { PortConfig } from '../drivers/network/types.js';
import type { NetworkBackend, NicConfig } from '../shared/model.js';

/** The network backend a NIC's port lives on: `linux` unless it says so (configs stored before backends existed are linux). */
export const nicBackend = (nic: NicConfig): NetworkBackend => nic.backend ?? 'linux';

/**
 * The port of `nic`. Its guard allows the NIC's known addresses: a fixed one, a DHCP reservation (the spec's, which
 * the network's vmlink DHCP gives exactly that MAC, so every host allows it from the start: a migrated or restarted
 * guest never waits for a DHCP reply to pass its new host), and `allowedAddresses`. Only a NIC with none of the first
 * two takes an unknown address by DHCP (`dhcp`: the linux guard learns it from the reply).
 */
export function portOf(nic: NicConfig): PortConfig {
  const port: PortConfig = { tap: nic.tap, bridge: nic.bridge, mtu: nic.mtu };
  if (nic.vlan !== undefined) port.vlan = nic.vlan;
  if (nic.trunk) port.trunks = nic.trunk.vlans;
  // Trunk ports carry a router VM's many networks: they are not filtered, like `portSecurity: false`.
  else if (nic.portSecurity !== false) {
    const own = nic.staticIp?.address ?? nic.reservedIp;
    port.security = {
      mac: nic.mac,
      addresses: [...(own ? [own] : []), ...(nic.allowedAddresses ?? [])],
      ...(own ? {} : { dhcp: true }),
    };
  }
  // Groups ride on port security (validation refuses them without it).
  if (port.security && nic.securityGroups?.length) port.securityGroups = [...nic.securityGroups];
  return port;
}
