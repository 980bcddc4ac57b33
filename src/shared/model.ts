// Resolved desired state and observed state: the contract between plan, controller, agent and drivers.
// The plan resolves a spec into these per-host configs; the agent hands them to drivers as they are.
import type { ImageSpec } from '../spec/schema.js';

/** A port forward resolved to the VM address it targets. */
export interface ForwardConfig {
  protocol: 'tcp' | 'udp';
  hostPort: number;
  vm: string;
  targetIp: string;
  targetPort: number;
}

/** A DHCP reservation on a nat or isolated network. */
export interface DhcpReservation {
  mac: string;
  ip: string;
  hostname: string;
}

/** One network as one host must realise it. */
export interface NetworkConfig {
  name: string;
  mode: 'nat' | 'bridge' | 'isolated';
  /** Linux bridge device name (<= 15 chars), derived from the network name. */
  bridge: string;
  mtu: number;
  /** nat/isolated: the subnet, the host's address on it, and DHCP. */
  subnet?: {
    cidr: string;
    gateway: string;
    prefixLength: number;
    dhcpStart: string;
    dhcpEnd: string;
    reservations: DhcpReservation[];
  };
  /** bridge: the host NIC enslaved to the bridge; nat: the NIC traffic is masqueraded out of. */
  uplink?: string;
  /** nat only. */
  forwards: ForwardConfig[];
}

/** One VM NIC as the hypervisor must realise it. */
export interface NicConfig {
  network: string;
  bridge: string;
  /** Persistent tap device name (<= 15 chars), derived from VM name and NIC index. */
  tap: string;
  mac: string;
  mtu: number;
  /** Fixed address with prefix (e.g. 10.0.0.5/24) and gateway, when the guest must not use DHCP. */
  staticIp?: { address: string; prefixLength: number; gateway?: string };
}

/** One VM disk. */
export interface DiskConfig {
  name: string;
  sizeMiB: number;
}

/** One VM as its host must realise it. */
export interface VmConfig {
  name: string;
  cpus: number;
  memoryMiB: number;
  image: ImageSpec;
  disks: DiskConfig[];
  nics: NicConfig[];
  state: 'running' | 'stopped';
}

/** Power state of a VM as observed on its host. */
export type VmPowerState = 'running' | 'stopped' | 'paused' | 'crashed';

/** A network as observed on a host. */
export interface ObservedNetwork {
  name: string;
  bridge: string;
  /** Hash of the NetworkConfig it was last realised from (see `configHash`). */
  configHash: string;
  /** Problems seen (bridge missing, dnsmasq dead, ...): the plan repairs a network that has any. */
  problems: string[];
}

/** A VM as observed on a host. */
export interface ObservedVm {
  name: string;
  state: VmPowerState;
  pid?: number;
  configHash: string;
  /** Problems seen (tap missing, QMP unresponsive, ...). */
  problems: string[];
}

/** What a host can do, as its agent reports it. */
export interface HostCapabilities {
  accelerator: 'kvm' | 'tcg';
  /** Why this accelerator was chosen (e.g. "KVM probe timed out after 5 s; using TCG"). */
  acceleratorReason: string;
  cpus: number;
  memoryMiB: number;
  /** Kernel network features (vlan, vxlan, macvlan, bridge-vlan-filtering, ...). */
  network: Record<string, boolean>;
}

/** Everything an agent reports about its host. */
export interface HostReport {
  host: string;
  agentVersion: string;
  capabilities: HostCapabilities;
  networks: ObservedNetwork[];
  vms: ObservedVm[];
}
