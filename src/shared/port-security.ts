// Bounds and shapes of the guest filters (host input policy, port security) shared by spec, model and wire.

/** Most host services one network may open to its VMs. */
export const HOST_SERVICES_MAX = 32;
/** Most extra addresses (`allowedAddresses`) one NIC may send from. */
export const NIC_ALLOWED_ADDRESSES_MAX = 16;

/** A host service a network's VMs may reach (`networks[].hostServices`). */
export interface HostService {
  protocol: 'tcp' | 'udp';
  port: number;
}
