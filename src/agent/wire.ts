// Wire types of the agent's HTTP API: strict zod schemas (unknown fields rejected) shared by agent and controller.

import { z } from 'zod';
import { FencingTokenSchema } from '../shared/cluster.js';
import { ErrorBodySchema } from '../shared/errors.js';
import {
  AGENT_BATCH_MAX_ACTIONS,
  CONFIRM_WINDOW_MAX_S,
  CONFIRM_WINDOW_MIN_S,
  DHCP_RESERVATIONS_MAX,
  LINK_MTU_MAX,
  MTU_MIN,
  NETWORK_FORWARDS_MAX,
  NETWORK_MTU_MAX,
  NETWORK_PREFIX_MAX,
  NETWORK_PREFIX_MIN,
  UPLINK_ADDRESSES_MAX,
  VLAN_ID_MAX,
  VLAN_ID_MIN,
  VM_CPUS_MAX,
  VM_DISKS_MAX,
  VM_MEMORY_MIB_MAX,
  VM_MEMORY_MIB_MIN,
  VM_NICS_MAX,
  VNI_MAX,
  VXLAN_REMOTES_MAX,
} from '../shared/limits.js';
import {
  ConfidentialKinds,
  type ForwardConfig,
  type HostReport,
  NetworkBackends,
  type NetworkConfig,
  type UplinkConfig,
  type VmConfig,
} from '../shared/model.js';
import { HOST_SERVICES_MAX } from '../shared/port-security.js';
import {
  RULE_PORTS_MAX,
  SECURITY_GROUP_MEMBERS_MAX,
  SECURITY_GROUP_RULES_MAX,
  type SecurityGroupConfig,
} from '../shared/security-groups.js';
import type { VersionInfo } from '../shared/version.js';
import {
  HostCidrSchema,
  HostNicSchema,
  ImageSchema,
  Ipv4Schema,
  MacSchema,
  NAME_PATTERN,
  NetworkCidrSchema,
  PortSchema,
} from '../spec/schema.js';
import { SecretValueBase64Schema } from '../spec/schema-primitives.js';
import {
  networkConfigIssues,
  securityGroupConfigIssues,
  vmConfigIssues,
  type WireIssue,
} from './wire-checks.js';
import { LbDeleteActionSchema, LbEnsureActionSchema, ObservedLbsSchema } from './wire-lb.js';
import { NicConfigSchema } from './wire-nic.js';
import { HostResourcesSchema, ObservedVcpusSchema, VmCpuConfigSchema } from './wire-resources.js';
import {
  DeviceInventorySchema,
  DeviceRequestsSchema,
  DiskSourceSchema,
  DisksSchema,
  ObservedPoolsSchema,
  storageActionSchemas,
} from './wire-storage.js';
import { TuningCapabilitiesSchema, tuningActionSchema } from './wire-tuning.js';

// Every field typed and bounded with the spec's own checks: the agent accepts what a spec can produce, nothing else.
const name = z.string().regex(NAME_PATTERN);
/** A device vmlink creates (bridge, tap, VXLAN device); which one an action may name is checked in wire-checks.ts. */
const devName = z.string().regex(/^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$/);
const ip = Ipv4Schema;
const port = PortSchema;
const cidr = NetworkCidrSchema;

const backend = z.enum(['linux', 'ovs']);
const vlanId = z.number().int().min(VLAN_ID_MIN).max(VLAN_ID_MAX);
// The spec's bounds: the agent accepts exactly the MTUs a spec can produce.
const networkMtu = z.number().int().min(MTU_MIN).max(NETWORK_MTU_MAX);

const ForwardConfigSchema = z
  .object({
    protocol: z.enum(['tcp', 'udp']),
    hostPort: port,
    vm: name,
    targetIp: ip,
    targetPort: port,
  })
  .strict() satisfies z.ZodType<ForwardConfig>;

/** NetworkConfig as it crosses the wire. */
export const NetworkConfigSchema = z
  .object({
    name,
    mode: z.enum(['nat', 'bridge', 'isolated', 'vxlan', 'vlan']),
    backend,
    bridge: devName,
    mtu: networkMtu,
    vxlan: z
      .object({
        vni: z.number().int().min(1).max(VNI_MAX),
        device: devName,
        local: ip,
        remotes: z.array(ip).max(VXLAN_REMOTES_MAX),
        port,
        underlay: HostNicSchema,
      })
      .strict()
      .optional(),
    vlan: z.object({ id: vlanId, trunk: HostNicSchema }).strict().optional(),
    nat: z.boolean().optional(),
    subnet: z
      .object({
        cidr,
        gateway: ip,
        prefixLength: z.number().int().min(NETWORK_PREFIX_MIN).max(NETWORK_PREFIX_MAX),
        dhcpStart: ip,
        dhcpEnd: ip,
        reservations: z
          .array(z.object({ mac: MacSchema, ip, hostname: name }).strict())
          .max(DHCP_RESERVATIONS_MAX),
      })
      .strict()
      .optional(),
    uplink: HostNicSchema.optional(),
    forwards: z.array(ForwardConfigSchema).max(NETWORK_FORWARDS_MAX),
    hostServices: z
      .array(z.object({ protocol: z.enum(['tcp', 'udp']), port }).strict())
      .max(HOST_SERVICES_MAX)
      .optional(),
  })
  .strict() satisfies z.ZodType<NetworkConfig>;

/** VmConfig as it crosses the wire. */
export const VmConfigSchema = z
  .object({
    name,
    cpus: z.number().int().min(1).max(VM_CPUS_MAX),
    memoryMiB: z.number().int().min(VM_MEMORY_MIB_MIN).max(VM_MEMORY_MIB_MAX),
    image: ImageSchema,
    disks: DisksSchema,
    nics: z.array(NicConfigSchema).max(VM_NICS_MAX),
    state: z.enum(['running', 'stopped']),
    confidential: z.enum(ConfidentialKinds).optional(),
    rootSource: DiskSourceSchema.optional(),
    devices: DeviceRequestsSchema.optional(),
    cpu: VmCpuConfigSchema.optional(),
    hugepages: z.boolean().optional(),
  })
  .strict() satisfies z.ZodType<VmConfig>;

const hash = z.string().regex(/^[0-9a-f]{8,64}$/);

/** SecurityGroupConfig as it crosses the wire; rule consistency is checked in wire-checks.ts. */
export const SecurityGroupConfigSchema = z
  .object({
    name,
    rules: z
      .array(
        z
          .object({
            direction: z.enum(['ingress', 'egress']),
            protocol: z.enum(['tcp', 'udp', 'icmp', 'any']),
            ports: z
              .array(z.object({ from: port, to: port }).strict())
              .min(1)
              .max(RULE_PORTS_MAX)
              .optional(),
            // Any prefix, /0 included (a rule's remote, not a network vmlink builds).
            cidr: z
              .string()
              .regex(/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/)
              .refine((s) => {
                const [addr, prefix] = s.split('/') as [string, string];
                return Ipv4Schema.safeParse(addr).success && Number(prefix) <= 32;
              }, 'must be an IPv4 network such as 10.0.0.0/8')
              .optional(),
            group: name.optional(),
          })
          .strict(),
      )
      .max(SECURITY_GROUP_RULES_MAX),
    memberMacs: z.array(MacSchema).max(SECURITY_GROUP_MEMBERS_MAX),
  })
  .strict() satisfies z.ZodType<SecurityGroupConfig>;

/** UplinkConfig as it crosses the wire. */
export const UplinkConfigSchema = z
  .object({
    device: HostNicSchema,
    mtu: z.number().int().min(MTU_MIN).max(LINK_MTU_MAX).optional(),
    addresses: z.array(HostCidrSchema).min(1).max(UPLINK_ADDRESSES_MAX).optional(),
    gateway: ip.optional(),
  })
  .strict() satisfies z.ZodType<UplinkConfig>;

/**
 * Commit-confirm: the agent applies the action, then reverts it by itself unless `POST /v1/confirm/:id` arrives
 * within `timeoutMs` (used for steps that touch the uplink or the bridge carrying the management address).
 */
export const ConfirmSchema = z
  .object({
    id: z.string().uuid(),
    timeoutMs: z
      .number()
      .int()
      .min(CONFIRM_WINDOW_MIN_S * 1000)
      .max(CONFIRM_WINDOW_MAX_S * 1000),
  })
  .strict();

/**
 * The owner record's fencing token a VM action acts under (the controller adds it from the VM's owner record, as it
 * adds secrets). An agent in a cluster refuses to start a VM or open its disks unless etcd still names this host
 * with this token.
 */
export const FenceSchema = z.object({ token: FencingTokenSchema }).strict();
/** A fencing token on an action. */
export type Fence = z.infer<typeof FenceSchema>;

/**
 * Values of the controller-kept secrets one VM step needs (its encrypted disks' keys), base64, attached by the
 * controller only as it sends the step to the VM's host (`controller/secrets/delivery.ts`). The agent keeps them in
 * memory for that step alone: never on disk, in argv or in a log.
 */
export const SecretValuesSchema = z
  .array(
    z
      .object({
        name,
        value: SecretValueBase64Schema,
      })
      .strict(),
  )
  .max(VM_DISKS_MAX)
  .optional();
/** Secret values as they cross the wire. */
export type SecretValues = NonNullable<z.infer<typeof SecretValuesSchema>>;

/** Everything an agent can be asked to change on its host; each kind has its preconditions in the agent. */
export const AgentActionSchema = z
  .discriminatedUnion('kind', [
    z
      .object({
        kind: z.literal('network.ensure'),
        network: NetworkConfigSchema,
        configHash: hash,
        confirm: ConfirmSchema.optional(),
      })
      .strict(),
    z
      .object({
        kind: z.literal('uplink.configure'),
        uplink: UplinkConfigSchema,
        configHash: hash,
        confirm: ConfirmSchema.optional(),
      })
      .strict(),
    z.object({ kind: z.literal('network.delete'), name, confirm: ConfirmSchema.optional() }).strict(),
    tuningActionSchema(ConfirmSchema),
    LbEnsureActionSchema,
    LbDeleteActionSchema,
    // Creates or updates a security group on every backend of the host that has them.
    z
      .object({ kind: z.literal('securityGroup.ensure'), group: SecurityGroupConfigSchema, configHash: hash })
      .strict(),
    z.object({ kind: z.literal('securityGroup.delete'), name }).strict(),
    z
      .object({
        kind: z.literal('vm.create'),
        vm: VmConfigSchema,
        configHash: hash,
        secrets: SecretValuesSchema,
        fence: FenceSchema.optional(),
      })
      .strict(),
    // Plugs and unplugs NICs of a running VM so that they match `vm`, without restarting it.
    z
      .object({
        kind: z.literal('vm.hotplug'),
        vm: VmConfigSchema,
        configHash: hash,
        secrets: SecretValuesSchema,
        fence: FenceSchema.optional(),
      })
      .strict(),
    z
      .object({
        kind: z.literal('vm.start'),
        name,
        secrets: SecretValuesSchema,
        fence: FenceSchema.optional(),
      })
      .strict(),
    z
      .object({
        kind: z.literal('vm.stop'),
        name,
        force: z.boolean(),
        timeoutMs: z.number().int().min(0).max(600_000).optional(),
      })
      .strict(),
    z.object({ kind: z.literal('vm.delete'), name }).strict(),
    ...storageActionSchemas(SecretValuesSchema),
  ])
  .superRefine((action, ctx) => {
    const add = (issues: WireIssue[], at: string) => {
      for (const i of issues) ctx.addIssue({ code: 'custom', path: [at, ...i.path], message: i.message });
    };
    if (action.kind === 'network.ensure') add(networkConfigIssues(action.network), 'network');
    if (action.kind === 'vm.create' || action.kind === 'vm.hotplug') add(vmConfigIssues(action.vm), 'vm');
    if (action.kind === 'securityGroup.ensure') add(securityGroupConfigIssues(action.group), 'group');
  });
/** One change an agent applies. */
export type AgentAction = z.infer<typeof AgentActionSchema>;

/**
 * A phase's steps for one host, applied in order in one request (`POST /v1/actions/batch`). Commit-confirmed
 * actions are not batched: each needs its own confirmation round trip.
 */
export const AgentBatchSchema = z
  .object({ actions: z.array(AgentActionSchema).min(1).max(AGENT_BATCH_MAX_ACTIONS) })
  .strict()
  .refine((b) => b.actions.every((a) => !('confirm' in a) || a.confirm === undefined), {
    message: 'commit-confirmed actions cannot be batched; send each to POST /v1/actions',
    path: ['actions'],
  });
/** A batch of actions. */
export type AgentBatch = z.infer<typeof AgentBatchSchema>;

/** What became of one action of a batch. */
export const ActionResultSchema = z.union([
  z.object({ ok: z.literal(true) }).strict(),
  z.object({ ok: z.literal(false), error: ErrorBodySchema.shape.error }).strict(),
]);
/** What became of one action of a batch. */
export type ActionResult = z.infer<typeof ActionResultSchema>;

/**
 * The outcome of a batch, one entry per action the agent attempted, in order. The agent stops after the first
 * failing action (a group it ran concurrently, such as VM starts, may report several); actions past the end of
 * `results` were not attempted.
 */
export const AgentBatchResultSchema = z.object({ results: z.array(ActionResultSchema) }).strict();
/** The outcome of a batch. */
export type AgentBatchResult = z.infer<typeof AgentBatchResultSchema>;

/** State of a commit-confirmed change. */
export const ConfirmStateSchema = z.object({
  id: z.string(),
  state: z.enum(['pending', 'confirmed', 'rolled-back', 'rollback-failed']),
  detail: z.string(),
});
/** State of a commit-confirmed change. */
export type ConfirmState = z.infer<typeof ConfirmStateSchema>;

// Responses. Objects are not strict here: a newer agent may add fields, which an older controller drops unread.

/** One side of a version handshake: its software version and the range of a protocol it speaks. */
export const VersionInfoSchema = z.object({
  software: z.string(),
  version: z.number().int(),
  min: z.number().int(),
}) satisfies z.ZodType<VersionInfo>;

/** Answer of `GET /v1/health`: liveness, versions (`wire`: the agent's range of this wire protocol), backends. */
export const AgentHealthSchema = z.object({
  ok: z.boolean(),
  version: z.string(),
  wire: VersionInfoSchema.optional(),
  backends: z.array(z.enum(NetworkBackends)).optional(),
});

/** Answer of a request that changes something and has nothing else to say. */
export const OkSchema = z.object({ ok: z.literal(true) });

const problems = z.array(z.string());

/** A network as observed on a host, with the config it was realised from when the backend reports it. */
export const ObservedNetworkSchema = z.object({
  name: z.string(),
  bridge: z.string(),
  configHash: z.string(),
  problems,
  config: NetworkConfigSchema.optional(),
  leases: z
    .array(z.object({ mac: z.string(), ip: z.string(), hostname: z.string().optional() }))
    .optional()
    .describe('unexpired DHCP leases, where this host serves DHCP on the network'),
});

const ConfidentialSupportSchema = z.object({ available: z.boolean(), reason: z.string().max(500) });

/** Everything an agent reports about its host (`GET /v1/report`). */
export const HostReportSchema = z.object({
  host: z.string(),
  agentVersion: z.string(),
  capabilities: z.object({
    accelerator: z.enum(['kvm', 'tcg']),
    acceleratorReason: z.string(),
    cpus: z.number().int().min(0),
    memoryMiB: z.number().min(0),
    network: z.record(z.string(), z.boolean()),
    backends: z.array(z.enum(NetworkBackends)),
    confidential: z
      .object({
        sev: ConfidentialSupportSchema,
        'sev-snp': ConfidentialSupportSchema,
        tdx: ConfidentialSupportSchema,
        cbitpos: z.number().int().min(0).max(63).optional(),
        reducedPhysBits: z.number().int().min(0).max(63).optional(),
      })
      .optional(),
    tuning: TuningCapabilitiesSchema.optional(),
    resources: HostResourcesSchema.optional(),
  }),
  networks: z.array(ObservedNetworkSchema),
  vms: z.array(
    z.object({
      name: z.string(),
      state: z.enum(['running', 'stopped', 'paused', 'crashed']),
      pid: z.number().int().optional(),
      configHash: z.string(),
      problems,
      config: VmConfigSchema.optional(),
      ports: z
        .array(
          z.object({
            network: z.string(),
            tap: z.string(),
            bridge: z.string(),
            trunk: z.array(z.string()).optional(),
          }),
        )
        .optional(),
      vcpus: ObservedVcpusSchema.optional(),
      cpuMax: z.string().max(64).optional(),
    }),
  ),
  uplink: z
    .object({
      device: z.string(),
      addressDevice: z.string(),
      mtu: z.number().int(),
      addresses: z.array(z.string()),
      gateway: z.string().optional(),
      configHash: z.string().optional(),
    })
    .optional(),
  securityGroups: z
    .array(
      z.object({
        name: z.string(),
        configHash: z.string(),
        problems,
        config: SecurityGroupConfigSchema.optional(),
      }),
    )
    .optional(),
  pools: ObservedPoolsSchema.optional(),
  devices: DeviceInventorySchema.optional(),
  loadBalancers: ObservedLbsSchema.optional(),
}) satisfies z.ZodType<HostReport>;

/** A network's OpenFlow rules on one host (`GET /v1/networks/:name/flows`). */
export const FlowsSchema = z.object({ backend: z.string(), flows: z.string() });

/** A PEM of the certificate exchange (a P-256 certificate or request is well under 2 KiB). */
const TlsPem = z
  .string()
  .min(1)
  .max(16 * 1024);
/** Answer of `POST /v1/tls/csr`: a request for a new key, which the agent keeps until its certificate comes. */
export const CsrAnswerSchema = z.object({ csr: TlsPem }).strict();
/** `POST /v1/tls/cert`: the certificate for the agent's pending key, and the CA it chains to. */
export const InstallCertSchema = z.object({ cert: TlsPem, ca: TlsPem }).strict();
