import { z } from 'zod';
import { CLUSTER_HEARTBEAT_S_DEFAULT } from '../shared/cluster.js';
import {
  CLOUD_INIT_SSH_KEYS_MAX,
  CLOUD_INIT_USER_DATA_MAX,
  CONFIRM_WINDOW_MAX_S,
  CONFIRM_WINDOW_MIN_S,
  CONFIRM_WINDOW_MS,
  DEFAULT_MTU,
  DEFAULT_OVERLAY_MTU,
  ETCD_MEMBERS_MAX,
  HA_HOSTS_MAX,
  MTU_MIN,
  NETWORK_FORWARDS_MAX,
  NETWORK_MTU_MAX,
  SSH_KEY_LINE_MAX,
  TRUNK_NETWORKS_MAX,
  UPLINK_ADDRESSES_MAX,
  VM_CPUS_MAX,
  VM_DISKS_MAX,
  VM_MEMORY_MIB_MAX,
  VM_MEMORY_MIB_MIN,
  VM_NICS_MAX,
  VNI_MAX,
} from '../shared/limits.js';
import { ConfidentialKinds } from '../shared/model.js';
import { HOST_SERVICES_MAX, NIC_ALLOWED_ADDRESSES_MAX } from '../shared/port-security.js';
import { NIC_SECURITY_GROUPS_MAX, SECURITY_GROUPS_MAX } from '../shared/security-groups.js';
import { POOLS_MAX, VM_DEVICES_MAX, VOLUMES_MAX } from '../shared/storage.js';
import { BackupPoliciesSchema, BackupStoresSchema } from './schema-backup.js';
import { clusterBalanceFields, vmResourceFields } from './schema-balance.js';
import { LabSchema } from './schema-lab.js';
import { LoadBalancersSchema } from './schema-lb.js';
import { AlertRulesSchema, HostTuningSchema } from './schema-observe.js';
import {
  cidr,
  dhcpRange,
  hostCidr,
  ifname,
  ipv4,
  linkMtu,
  mac,
  name,
  port,
  usbId,
  vlanId,
} from './schema-primitives.js';
import { type SecurityGroupRuleSchema, SecurityGroupSchema } from './schema-security-groups.js';
import { DeviceRequestSchema, DiskSchema, PoolSchema, VolumeSchema } from './schema-storage.js';

export {
  HostCidrSchema,
  HostNicSchema,
  Ipv4Schema,
  MacSchema,
  NAME_PATTERN,
  NetworkCidrSchema,
  PortSchema,
} from './schema-primitives.js';
export { SecurityGroupRuleSchema, SecurityGroupSchema } from './schema-security-groups.js';

/** Network backends: `linux` (bridges, vxlan and 802.1Q devices) or `ovs` (Open vSwitch). */
export const BackendSchema = z.enum(['linux', 'ovs']);

/** A physical machine that runs a vmlink agent. */
export const HostSchema = z
  .object({
    name,
    /**
     * How the controller reaches the agent: `https://addr:port` (mutual TLS), or a local `unix:///path/agent.sock`
     * (`https+unix:///path` for TLS over a forwarded socket). The lab fills this in.
     */
    agent: z
      .string()
      .regex(
        /^((https\+)?unix:\/\/\/[\w./-]+|https?:\/\/[\w.:-]+)$/,
        'must be https://host:port or unix:///path',
      )
      .optional(),
    /** The NIC that joins the host to the physical LAN (bridged networks enslave it). */
    uplink: ifname.default('eth0'),
    /**
     * `compute` runs VMs and networks; `storage` serves iscsi and nfs pools (tgtd, nfs-ganesha) and runs neither.
     */
    role: z.enum(['compute', 'storage']).default('compute'),
    /** Passthrough policy: USB devices (`vendor:product`, hex; `vendor:*` for all of a vendor) VMs may take. */
    passthrough: z
      .object({ usb: z.array(usbId(true)).max(64).default([]) })
      .strict()
      .optional(),
    /** Limits the plan checks VMs against; defaults to what the agent reports. */
    capacity: z
      .object({ cpus: z.number().int().min(1), memoryMiB: z.number().int().min(64) })
      .strict()
      .optional(),
    /** Underlay address (VXLAN endpoint and management); defaults to the lab machine's address. */
    address: ipv4.optional(),
    /**
     * Physical segment -> host NIC. Always has `default` -> uplink; with a lab, `lab.segments[i]` -> `eth<i+1>`;
     * entries here add to or override those.
     */
    segments: z.record(name, ifname).optional(),
    /** vmlink manages the uplink itself (MTU, addresses, default gateway), commit-confirmed. */
    network: z
      .object({
        mtu: linkMtu.optional(),
        addresses: z.array(hostCidr).min(1).max(UPLINK_ADDRESSES_MAX).optional(),
        gateway: ipv4.optional(),
      })
      .strict()
      .optional(),
    /** How long the agent waits for confirmation of a risky step before it reverts it by itself. */
    confirmTimeoutSeconds: z
      .number()
      .int()
      .min(CONFIRM_WINDOW_MIN_S)
      .max(CONFIRM_WINDOW_MAX_S)
      .default(CONFIRM_WINDOW_MS / 1000),
    /** TCP parameters of the host's network namespace, commit-confirmed (docs/observability.md). */
    tuning: HostTuningSchema.optional(),
  })
  .strict();

/** A port forward from the host's address to a VM on a NAT network. */
export const ForwardSchema = z
  .object({
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
    hostPort: port,
    vm: name,
    vmPort: port,
  })
  .strict();

/** MTU of a network and its VM NICs. */
const mtu = z.number().int().min(MTU_MIN).max(NETWORK_MTU_MAX);

/** A service on the host that a network's VMs may reach (beyond DHCP, DNS and ping to the gateway). */
export const HostServiceSchema = z.object({ protocol: z.enum(['tcp', 'udp']), port }).strict();

/**
 * Host services VMs of a network may reach at any of the host's addresses; everything else from a VM port to the host
 * is dropped (DHCP, DNS and ICMP echo to the gateway address and IPv6 neighbour discovery always pass).
 */
const hostServices = z
  .array(HostServiceSchema)
  .max(HOST_SERVICES_MAX)
  .refine((l) => new Set(l.map((s) => `${s.protocol}/${s.port}`)).size === l.length, 'lists a service twice')
  .optional();

const networkBase = {
  name,
  host: name,
  /** MTU of the bridge and VM NICs. */
  mtu: mtu.default(DEFAULT_MTU),
  /** Only linux is supported on single-host networks for now (validation says so). */
  backend: BackendSchema.default('linux'),
  hostServices,
};

/** Where a multi-host network's subnet is routed: that host gets the gateway address, DHCP, and optionally NAT. */
export const MultiHostGatewaySchema = z
  .object({
    host: name,
    /** Masquerade the subnet out of the gateway host's uplink. */
    nat: z.boolean().default(false),
    /** The gateway host's address on the network; defaults to the first address of cidr. */
    address: ipv4.optional(),
  })
  .strict();

/** Networks: `nat` (private subnet masqueraded out of the uplink), `bridge` (VMs on the physical LAN), `isolated`. */
export const NetworkSchema = z.discriminatedUnion('mode', [
  z
    .object({
      ...networkBase,
      mode: z.literal('nat'),
      cidr,
      /** Host address on the network; defaults to the first address. */
      gateway: ipv4.optional(),
      dhcp: dhcpRange.optional(),
      forwards: z.array(ForwardSchema).max(NETWORK_FORWARDS_MAX).default([]),
    })
    .strict(),
  z
    .object({
      ...networkBase,
      mode: z.literal('bridge'),
      /** Host NIC to enslave; defaults to the host's uplink. */
      uplink: ifname.optional(),
    })
    .strict(),
  z
    .object({
      ...networkBase,
      mode: z.literal('isolated'),
      cidr,
      gateway: ipv4.optional(),
      dhcp: dhcpRange.optional(),
    })
    .strict(),
  z
    .object({
      name,
      mode: z.literal('vxlan'),
      /** Member hosts; default: every spec host. */
      hosts: z.array(name).min(1).optional(),
      vni: z.number().int().min(1).max(VNI_MAX),
      /** Must leave 50 bytes of VXLAN overhead below every member host's underlay MTU. */
      mtu: mtu.default(DEFAULT_OVERLAY_MTU),
      backend: BackendSchema.default('linux'),
      hostServices,
      /** Optional: checks fixed NIC addresses; needed for a gateway. Overlays may overlap each other. */
      cidr: cidr.optional(),
      gateway: MultiHostGatewaySchema.optional(),
      /** DHCP range served by the gateway host. */
      dhcp: dhcpRange.optional(),
    })
    .strict(),
  z
    .object({
      name,
      mode: z.literal('vlan'),
      hosts: z.array(name).min(1).optional(),
      vlan: vlanId,
      /** `site.environments[].name`: the VLAN id must lie in its ranges. */
      environment: name.optional(),
      hostServices,
      /** Physical segment carrying the tagged frames (see `hosts[].segments`). */
      segment: name.default('default'),
      mtu: mtu.default(DEFAULT_MTU),
      backend: BackendSchema.default('linux'),
      cidr: cidr.optional(),
      gateway: MultiHostGatewaySchema.optional(),
      dhcp: dhcpRange.optional(),
    })
    .strict(),
]);

/** One VM network card: on one network (`network`), or a trunk port carrying vlan networks tagged (`trunk`). */
export const NicSchema = z
  .object({
    /** Exactly one of network and trunk (validation checks). */
    network: name.optional(),
    /** vlan networks of one segment (backend ovs) the guest sees tagged with their VLAN ids. */
    trunk: z.array(name).min(1).max(TRUNK_NETWORKS_MAX).optional(),
    /** Fixed MAC; defaults to a stable one derived from VM name and NIC index. */
    mac: mac.optional(),
    /** Fixed address: a DHCP reservation on nat/isolated networks, a kernel-command-line address elsewhere. */
    ip: ipv4.optional(),
    /**
     * Anti-spoofing on this NIC's port (default true): only its MAC, its addresses (ip, allowedAddresses, the one
     * a DHCP server gave it) leave it, and no DHCP server replies. false: the guest may send anything (trunks never filter).
     */
    portSecurity: z.boolean().optional(),
    /** Extra addresses the guest may send from (a VIP moved by Keepalived, say). */
    allowedAddresses: z.array(ipv4).max(NIC_ALLOWED_ADDRESSES_MAX).optional(),
    /**
     * Security groups (`securityGroups[].name`) of this NIC: stateful, default-deny inbound, outbound allowed unless
     * a group has egress rules. Absent or empty: no groups (today's behaviour). Needs port security.
     */
    securityGroups: z
      .array(name)
      .max(NIC_SECURITY_GROUPS_MAX)
      .refine((l) => new Set(l).size === l.length, 'lists a group twice')
      .optional(),
  })
  .strict();

/** What a VM boots: vmlink's test guest, or a user's qcow2 cloud image with a cloud-init NoCloud seed. */
export const ImageSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('test-guest') }).strict(),
  /** Boots from a volume of a pool: the volume itself, or (`clone`) a linked clone `<vm>-root` of a template. */
  z
    .object({ kind: z.literal('volume'), pool: name, volume: name, clone: z.boolean().default(false) })
    .strict(),
  z
    .object({
      kind: z.literal('qcow2'),
      /** Absolute path of the base image on the host; the VM gets a copy-on-write overlay. */
      path: z
        .string()
        .regex(/^\/[\w./-]+\.(qcow2|img)$/, 'must be an absolute path to a .qcow2 or .img file'),
      cloudInit: z
        .object({
          userData: z.string().max(CLOUD_INIT_USER_DATA_MAX).optional(),
          sshAuthorizedKeys: z
            .array(
              z
                .string()
                .max(SSH_KEY_LINE_MAX)
                .regex(
                  /^(ssh|ecdsa)-[\w-]+ [A-Za-z0-9+/=]+( [^\n]*)?$/,
                  'must be one OpenSSH public key line',
                ),
            )
            .max(CLOUD_INIT_SSH_KEYS_MAX)
            .default([]),
        })
        .strict()
        .default({ sshAuthorizedKeys: [] }),
    })
    .strict(),
]);

/** What HA does for a VM in a cluster (see docs/ha.md). */
export const HaPolicySchema = z
  .object({
    /**
     * `started`: HA keeps it running, restarting it on a surviving host when its host fails; `stopped`: HA keeps it
     * stopped but gives it a live owner; `disabled`: HA leaves it alone (it stays down with its host).
     */
    state: z.enum(['started', 'stopped', 'disabled']).default('started'),
    /** Higher restarts first when capacity is short. */
    priority: z.number().int().min(0).max(1000).default(0),
    /** The hosts it may run on (default: every compute host). */
    hosts: z.array(name).min(1).max(HA_HOSTS_MAX).optional(),
    /** An anti-affinity group: VMs of one group never share a host. */
    group: name.optional(),
  })
  .strict();

/** A virtual machine. */
export const VmSchema = z
  .object({
    name,
    /** Its host; in a cluster it may be left out and the scheduler places it (by free memory and CPU). */
    host: name.optional(),
    /** HA policy (needs `cluster:` with the etcd store). */
    ha: HaPolicySchema.optional(),
    cpus: z.number().int().min(1).max(VM_CPUS_MAX).default(1),
    memoryMiB: z.number().int().min(VM_MEMORY_MIB_MIN).max(VM_MEMORY_MIB_MAX).default(256),
    image: ImageSchema.default({ kind: 'test-guest' }),
    disks: z.array(DiskSchema).max(VM_DISKS_MAX).default([]),
    /** Host devices passed through (checked at plan time against the host's inventory and policy). */
    devices: z.array(DeviceRequestSchema).max(VM_DEVICES_MAX).default([]),
    nics: z.array(NicSchema).min(1, 'a VM needs at least one NIC').max(VM_NICS_MAX),
    /** Desired power state. */
    state: z.enum(['running', 'stopped']).default('running'),
    /** Refuse to delete this VM and its disks (apply and destroy) until a spec sets it to false. */
    protected: z.boolean().default(false),
    /** A confidential VM (AMD SEV, SEV-SNP or Intel TDX): needs KVM and a host that reports the support. */
    confidential: z.enum(ConfidentialKinds).optional(),
    ...vmResourceFields,
  })
  .strict();

/** The cluster: several controllers and HA on etcd (see docs/ha.md). */
export const ClusterSchema = z
  .object({
    /** `etcd` (leases, an election, owner records with fencing tokens); `sqlite` keeps one controller, no HA. */
    store: z.enum(['sqlite', 'etcd']).default('etcd'),
    /**
     * How often agents renew their lease; a host is failed when its lease (2 heartbeats) runs out. At least 3: an agent
     * fences 2 s before its lease can end, and needs a heartbeat's room before that (docs/ha.md, "Timing").
     */
    heartbeatSeconds: z.number().int().min(3).max(60).default(CLUSTER_HEARTBEAT_S_DEFAULT),
    /** etcd's client URLs (`https://addr:2379`); a lab fills them in from `lab.etcd`. */
    endpoints: z
      .array(z.string().regex(/^https:\/\/[\w.-]+:\d{1,5}$/, 'must be https://addr:port'))
      .min(1)
      .max(ETCD_MEMBERS_MAX)
      .optional(),
    /** Admission control: keep room to restart every HA VM after this many host failures (0: off). */
    admission: z
      .object({ hostFailures: z.number().int().min(0).max(8).default(0) })
      .strict()
      .default({ hostFailures: 0 }),
    ...clusterBalanceFields,
  })
  .strict();

/** A VLAN policy: which VLAN ids networks of this environment may use. */
export const EnvironmentSchema = z
  .object({
    name,
    vlans: z
      .array(z.object({ from: vlanId, to: vlanId }).strict())
      .min(1, 'an environment needs at least one VLAN range'),
  })
  .strict();

/** Site-wide policy. */
export const SiteSchema = z.object({ environments: z.array(EnvironmentSchema).default([]) }).strict();

/** A whole vmlink spec file. */
export const SpecSchema = z
  .object({
    version: z.literal(1),
    site: SiteSchema.optional(),
    hosts: z.array(HostSchema).min(1, 'at least one host is needed'),
    networks: z.array(NetworkSchema).default([]),
    vms: z.array(VmSchema).default([]),
    securityGroups: z.array(SecurityGroupSchema).max(SECURITY_GROUPS_MAX).default([]),
    pools: z.array(PoolSchema).max(POOLS_MAX).default([]),
    volumes: z.array(VolumeSchema).max(VOLUMES_MAX).default([]),
    cluster: ClusterSchema.optional(),
    /** Where backups are kept (docs/backup.md). */
    backupStores: BackupStoresSchema,
    /** Backup policies: VMs, store, schedule, retention, key, objectives. */
    backups: BackupPoliciesSchema,
    /** Alert rules over the metrics (docs/observability.md). */
    alerts: AlertRulesSchema,
    /** Load balancers: a VIP held by Keepalived on two or more hosts running HAProxy (docs/load-balancers.md). */
    loadBalancers: LoadBalancersSchema,
    lab: LabSchema.optional(),
  })
  .strict();

/** A parsed spec before placement: VMs of a cluster may name no host yet. */
export type UnplacedSpec = z.infer<typeof SpecSchema>;
/** A VM entry before placement. */
export type UnplacedVmSpec = UnplacedSpec['vms'][number];
/** Where a VM's host came from: the spec, its owner record (HA, maintenance), or the scheduler. */
export type PlacementSource = 'spec' | 'owner' | 'scheduler';
/** A VM entry of a placed spec: its host is known. */
export type VmSpec = UnplacedVmSpec & {
  host: string;
  placedBy?: PlacementSource;
  /** The host the spec itself names (absent: none, the scheduler placed it); `host` may differ (owner records). */
  specHost?: string;
};
/**
 * A parsed, defaulted, placed spec (see `loadSpec`): what plan, verify and views work on. Every VM has a host.
 */
export type Spec = Omit<UnplacedSpec, 'vms'> & { vms: VmSpec[] };
/** A host entry of a spec. */
export type HostSpec = z.infer<typeof HostSchema>;
/** A network entry of a spec. */
export type NetworkSpec = z.infer<typeof NetworkSchema>;
/** A NAT network entry. */
export type NatNetworkSpec = Extract<NetworkSpec, { mode: 'nat' }>;
/** A network on one host: nat, bridge or isolated. */
export type SingleHostNetworkSpec = Extract<NetworkSpec, { host: string }>;
/** A network across hosts: vxlan or vlan. */
export type MultiHostNetworkSpec = Extract<NetworkSpec, { mode: 'vxlan' | 'vlan' }>;
/** A vxlan network entry. */
export type VxlanNetworkSpec = Extract<NetworkSpec, { mode: 'vxlan' }>;
/** A vlan network entry. */
export type VlanNetworkSpec = Extract<NetworkSpec, { mode: 'vlan' }>;
/** An HA policy. */
export type HaPolicy = z.infer<typeof HaPolicySchema>;
/** The cluster section. */
export type ClusterSpec = z.infer<typeof ClusterSchema>;
/** A security group entry. */
export type SecurityGroupSpec = z.infer<typeof SecurityGroupSchema>;
/** A security group rule entry. */
export type SecurityGroupRuleSpec = z.infer<typeof SecurityGroupRuleSchema>;
/** A VM NIC entry. */
export type NicSpec = z.infer<typeof NicSchema>;
/** A port forward entry. */
export type ForwardSpec = z.infer<typeof ForwardSchema>;
/** The lab section. */
export type LabSpec = z.infer<typeof LabSchema>;
/** The site section (VLAN environments). */
export type SiteSpec = z.infer<typeof SiteSchema>;
/** A VM image entry. */
export type ImageSpec = z.infer<typeof ImageSchema>;
/** A storage pool as written in a spec. */
export type PoolSpec = z.infer<typeof PoolSchema>;
/** A named volume as written in a spec. */
export type VolumeSpec = z.infer<typeof VolumeSchema>;
/** A VM disk as written in a spec. */
export type DiskSpec = z.infer<typeof DiskSchema>;
