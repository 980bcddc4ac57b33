// Resolved desired state and observed state: the contract between plan, controller, agent and drivers.
// The plan resolves a spec into these per-host configs; the agent hands them to drivers as they are.

import type { ImageSpec } from '../spec/schema.js';
import type { DeviceInventory, DeviceRequest } from './devices.js';
import type { ObservedLb } from './lb.js';
import type { HostService } from './port-security.js';
import type { SecurityGroupConfig } from './security-groups.js';
import type { DiskSource, ObservedPool } from './storage.js';
import type { TuningCapabilities } from './tuning.js';

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

/** Network backends an agent can drive. */
export const NetworkBackends = ['linux', 'ovs'] as const;
/** One of `NetworkBackends`. */
export type NetworkBackend = (typeof NetworkBackends)[number];

/** A VXLAN overlay as one host realises it: its VTEP and the remote VTEPs it replicates to (head-end replication). */
export interface VxlanConfig {
  vni: number;
  /** VXLAN device (linux backend) or OVS tunnel port prefix, <= 15 chars, derived from the network name. */
  device: string;
  /** This host's VTEP address (its underlay address). */
  local: string;
  /** Every other host's VTEP address, sorted: one static all-zeros FDB entry (linux) or one tunnel port (ovs) each. */
  remotes: string[];
  /** UDP port (4789). */
  port: number;
  /** Host NIC carrying the underlay (the VTEP address lives on it or on the bridge that enslaves it). */
  underlay: string;
}

/** An 802.1Q VLAN network as one host realises it (ovs backend; linux needs kernel 802.1Q support). */
export interface VlanConfig {
  id: number;
  /** Host NIC that carries the tagged frames to the physical switch (a trunk port of the host bridge). */
  trunk: string;
}

/** One network as one host must realise it. */
export interface NetworkConfig {
  name: string;
  mode: 'nat' | 'bridge' | 'isolated' | 'vxlan' | 'vlan';
  backend: NetworkBackend;
  /**
   * Bridge device name (<= 15 chars): linux bridge per network; for ovs vlan networks the OVS bridge shared by
   * every VLAN network on the same trunk NIC (derived from the trunk NIC's name).
   */
  bridge: string;
  mtu: number;
  /** vxlan only. */
  vxlan?: VxlanConfig;
  /** vlan only. */
  vlan?: VlanConfig;
  /** Masquerade the subnet out of the host (mode nat, and a vxlan network's NAT gateway host). */
  nat?: boolean;
  /**
   * nat/isolated: the subnet, the host's address on it, and DHCP. vxlan/vlan: only on the network's gateway host
   * (absent elsewhere: those hosts only switch frames).
   */
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
  /** nat (and a vxlan gateway with nat) only. */
  forwards: ForwardConfig[];
  /** Host services its VMs may reach beyond DHCP, DNS and ping to the gateway (absent: none), sorted. */
  hostServices?: HostService[];
}

/** One VM NIC as the hypervisor must realise it. */
export interface NicConfig {
  /** The network; for a trunk NIC, the first of `trunk.networks`. */
  network: string;
  backend: NetworkBackend;
  bridge: string;
  /** Access port of a vlan network: the tag the switch adds and strips. */
  vlan?: number;
  /** Trunk port: the guest sees these VLANs tagged (e.g. a router VM with eth0.100, eth0.200). */
  trunk?: { networks: string[]; vlans: number[] };
  /** Persistent tap device name (<= 15 chars), derived from VM name and NIC index. */
  tap: string;
  mac: string;
  mtu: number;
  /** Fixed address with prefix (e.g. 10.0.0.5/24) and gateway, when the guest must not use DHCP. */
  staticIp?: { address: string; prefixLength: number; gateway?: string };
  /**
   * The NIC's DHCP reservation (spec `ip:` on a network whose vmlink DHCP hands that MAC exactly this address): its
   * port guard allows it on every host from the start, not only where a DHCP reply was seen (a migrated or restarted
   * guest keeps its address without renewing its lease). Absent with `staticIp`, without port security, and for
   * pool addresses.
   */
  reservedIp?: string;
  /** false: no anti-spoofing on this NIC's port (absent: on, except trunk NICs). */
  portSecurity?: false;
  /** Extra source addresses the port lets out (a VIP); absent: none. */
  allowedAddresses?: string[];
  /** Security groups of this NIC, in spec order (absent: none); each is realised on its host before the port. */
  securityGroups?: string[];
}

/** One VM disk. */
export interface DiskConfig {
  name: string;
  /** Size of a disk in the VM's directory or of a volume made for the VM; absent: the volume's own size. */
  sizeMiB?: number;
  /** LUKS-encrypted qcow2 whose key is the controller-kept secret of this name (its value never in the config). */
  encryption?: { secret: string };
  /** A pool volume (how this host opens it); absent: `disk-<name>.qcow2` in the VM's directory. */
  source?: DiskSource;
  /** A CD-ROM (read-only ISO) instead of a disk; absent: a disk. */
  media?: 'cdrom';
  readOnly?: true;
}

/** Confidential-computing technologies a VM can ask for (`vms[].confidential`). */
export const ConfidentialKinds = ['sev', 'sev-snp', 'tdx'] as const;
/** One of `ConfidentialKinds`. */
export type ConfidentialKind = (typeof ConfidentialKinds)[number];

/** Whether a host can launch one kind of confidential VM, and if not, the missing piece. */
export interface ConfidentialSupport {
  available: boolean;
  /** What is missing (kernel, firmware, QEMU version), or what was found. */
  reason: string;
}

/** What a host offers for confidential VMs: per kind, plus the SEV parameters QEMU's sev objects need. */
export interface ConfidentialCapabilities {
  sev: ConfidentialSupport;
  'sev-snp': ConfidentialSupport;
  tdx: ConfidentialSupport;
  /** Position of the C-bit in a page table entry (CPUID 0x8000001F EBX[5:0]), when the CPU has SEV. */
  cbitpos?: number;
  /** Physical address bits lost to memory encryption (CPUID 0x8000001F EBX[11:6]). */
  reducedPhysBits?: number;
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
  /** Confidential VM (memory encrypted by the CPU); absent: an ordinary VM. */
  confidential?: ConfidentialKind;
  /** Image kind `volume`: the pool volume the VM boots from (its own clone `<vm>-root` when the spec says clone). */
  rootSource?: DiskSource;
  /** Host devices passed through, as checked at plan time. */
  devices?: DeviceRequest[];
  /** vCPU pinning (`pin[i]`: the host CPU of vCPU i) and CPU quota (percent of its vCPUs' time); absent: neither. */
  cpu?: VmCpuConfig;
  /** Guest RAM on the host's huge pages (a hugetlb memfd). */
  hugepages?: boolean;
}

/** A VM's CPU placement and limit (`vms[].cpu`). */
export interface VmCpuConfig {
  pin?: number[];
  quotaPercent?: number;
}

/** One vCPU's thread as observed: which host CPUs it may run on (`Cpus_allowed_list`). */
export interface ObservedVcpu {
  vcpu: number;
  thread: number;
  cpus: string;
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
  /** The config it was last realised from, when the backend reports it (plans then name the changed fields). */
  config?: NetworkConfig;
  /** Unexpired DHCP leases, where this host serves DHCP on the network. */
  leases?: ObservedLease[];
}

/** A DHCP lease a host's DHCP server has handed out. */
export interface ObservedLease {
  mac: string;
  ip: string;
  hostname?: string;
}

/** A VM as observed on a host. */
export interface ObservedVm {
  name: string;
  state: VmPowerState;
  pid?: number;
  configHash: string;
  /** Problems seen (tap missing, QMP unresponsive, ...). */
  problems: string[];
  /** The config it was created from (plans name the changed fields and hot-plug NICs from it). */
  config?: VmConfig;
  /** Its NICs' host devices as realised, in NIC order (names may be hashed ones from before readable names). */
  ports?: ObservedPort[];
  /** Its vCPU threads and where they may run (a running VM with `cpu.pin`). */
  vcpus?: ObservedVcpu[];
  /** Its cgroup's `cpu.max` (a running VM with `cpu.quota`). */
  cpuMax?: string;
}

/** A VM NIC's host side: the tap and the bridge it is attached to. */
export interface ObservedPort {
  network: string;
  tap: string;
  bridge: string;
  /** A trunk NIC's networks (`network` is the first of them). */
  trunk?: string[];
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
  /** Network backends this agent can drive now (ovs only when Open vSwitch is installed and running). */
  backends: NetworkBackend[];
  /** Confidential-VM support (absent from agents older than this field: treated as none). */
  confidential?: ConfidentialCapabilities;
  /** TCP tuning of its network namespace: what it can set, what it has (absent from agents before tuning). */
  tuning?: TuningCapabilities;
  /** CPUs to pin to, CPU quotas, huge pages (absent from agents before issue 13). */
  resources?: HostResources;
}

/** What a host offers for `vms[].cpu` and `vms[].memory.hugepages`. */
export interface HostResources {
  /** Host CPUs a VM may be pinned to (`/sys/devices/system/cpu/online`). */
  onlineCpus: number[];
  /** Quotas need a cgroup v2 hierarchy vmlink may write (`cpu.max`). */
  cpuQuota: { available: boolean; reason: string };
  /**
   * Free huge pages of the default size to back guest RAM with (a hugetlb memfd: no mount needed). `mount` is what
   * older agents reported (the hugetlbfs mount they needed); no longer sent.
   */
  hugepages: { available: boolean; reason: string; pageSizeKiB: number; free: number; mount?: string };
  /** Free space (MiB) of the filesystem holding the VMs' directories and their local disks (absent: unknown). */
  vmDiskFreeMiB?: number;
}

/** How a host's uplink itself must be configured (spec `hosts[].network`); changes are commit-confirmed. */
export interface UplinkConfig {
  /** The uplink NIC (the bridge enslaving it carries the addresses when a bridge network exists). */
  device: string;
  mtu?: number;
  /** Addresses with prefix, e.g. 192.168.50.10/24; undefined = leave the addresses alone. */
  addresses?: string[];
  gateway?: string;
}

/** A host's uplink as observed. */
export interface ObservedUplink {
  device: string;
  /** Device that carries the addresses (the uplink or the bridge enslaving it). */
  addressDevice: string;
  mtu: number;
  addresses: string[];
  gateway?: string;
  /** Hash of the UplinkConfig last applied through vmlink, if any. */
  configHash?: string;
}

/** Everything an agent reports about its host. */
export interface HostReport {
  host: string;
  agentVersion: string;
  capabilities: HostCapabilities;
  networks: ObservedNetwork[];
  vms: ObservedVm[];
  uplink?: ObservedUplink;
  /** Security groups realised on the host (absent from agents before security groups: none). */
  securityGroups?: ObservedSecurityGroup[];
  /** Storage pools on the host (absent from agents before pools: none). */
  pools?: ObservedPool[];
  /** The host's PCI and USB devices (absent from agents before passthrough: unknown). */
  devices?: DeviceInventory;
  /** Load balancers on the host (absent from agents before load balancers: none). */
  loadBalancers?: ObservedLb[];
}

/** A security group as the host's backends realised it. */
export interface ObservedSecurityGroup {
  name: string;
  /** Hash of the SecurityGroupConfig it was applied from (see `securityGroupConfigHash`). */
  configHash: string;
  /** Problems seen (a backend lacks it or holds another version): the plan repairs a group that has any. */
  problems: string[];
  /** The config it was applied from (plans then name the changed rules and members). */
  config?: SecurityGroupConfig;
}
