import { z } from 'zod';

/** Names of every spec object: they reach commands, file names and interface aliases, so they are strict. */
export const NAME_PATTERN = /^[a-z][a-z0-9-]{0,30}$/;
const name = z
  .string()
  .regex(NAME_PATTERN, 'must match ^[a-z][a-z0-9-]{0,30}$ (lower-case letter, then up to 30 of a-z, 0-9, -)');

const ipv4 = z
  .string()
  .refine(
    (s) =>
      /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(s) &&
      s.split('.').every((o) => Number(o) <= 255 && String(Number(o)) === o),
    'must be an IPv4 address such as 10.0.0.5',
  );
const cidr = z.string().refine((s) => {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(s);
  return !!m && ipv4.safeParse(m[1]).success && Number(m[2]) >= 8 && Number(m[2]) <= 30;
}, 'must be an IPv4 network such as 10.0.0.0/24 (prefix 8-30)');
const mac = z
  .string()
  .regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, 'must be a lower-case MAC address such as 52:54:00:12:34:56')
  .refine(
    (m) => (Number.parseInt(m.slice(0, 2), 16) & 1) === 0,
    'must be a unicast MAC address (first octet even)',
  );
const ifname = z
  .string()
  .regex(/^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$/, 'must be a Linux interface name (1-15 characters)');
const port = z.number().int().min(1).max(65535);

/** A physical machine that runs a vmlink agent. */
export const HostSchema = z
  .object({
    name,
    /** How the controller reaches the agent: `unix:///path/agent.sock` or `http://addr:port`. The lab fills this in. */
    agent: z
      .string()
      .regex(/^(unix:\/\/\/[\w./-]+|https?:\/\/[\w.:-]+)$/, 'must be unix:///path or http://host:port')
      .optional(),
    /** The NIC that joins the host to the physical LAN (bridged networks enslave it). */
    uplink: ifname.default('eth0'),
    /** Limits the plan checks VMs against; defaults to what the agent reports. */
    capacity: z
      .object({ cpus: z.number().int().min(1), memoryMiB: z.number().int().min(64) })
      .strict()
      .optional(),
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

const networkBase = {
  name,
  host: name,
  /** MTU of the bridge and VM NICs. */
  mtu: z.number().int().min(576).max(9000).default(1500),
};

const dhcp = z
  .object({ start: ipv4, end: ipv4 })
  .strict()
  .describe('address range handed out by DHCP; defaults to .100-.199 of the network (or its upper half)');

/** Networks: `nat` (private subnet masqueraded out of the uplink), `bridge` (VMs on the physical LAN), `isolated`. */
export const NetworkSchema = z.discriminatedUnion('mode', [
  z
    .object({
      ...networkBase,
      mode: z.literal('nat'),
      cidr,
      /** Host address on the network; defaults to the first address. */
      gateway: ipv4.optional(),
      dhcp: dhcp.optional(),
      forwards: z.array(ForwardSchema).default([]),
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
      dhcp: dhcp.optional(),
    })
    .strict(),
]);

/** One VM network card. */
export const NicSchema = z
  .object({
    network: name,
    /** Fixed MAC; defaults to a stable one derived from VM name and NIC index. */
    mac: mac.optional(),
    /** Fixed address: a DHCP reservation on nat/isolated networks, a kernel-command-line address elsewhere. */
    ip: ipv4.optional(),
  })
  .strict();

/** Extra disk attached to a VM (qcow2 in the VM's directory). */
export const DiskSchema = z
  .object({
    name,
    sizeMiB: z
      .number()
      .int()
      .min(1)
      .max(16 * 1024 * 1024),
  })
  .strict();

/** What a VM boots: vmlink's test guest, or a user's qcow2 cloud image with a cloud-init NoCloud seed. */
export const ImageSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('test-guest') }).strict(),
  z
    .object({
      kind: z.literal('qcow2'),
      /** Absolute path of the base image on the host; the VM gets a copy-on-write overlay. */
      path: z
        .string()
        .regex(/^\/[\w./-]+\.(qcow2|img)$/, 'must be an absolute path to a .qcow2 or .img file'),
      cloudInit: z
        .object({
          userData: z.string().optional(),
          sshAuthorizedKeys: z
            .array(
              z
                .string()
                .regex(
                  /^(ssh|ecdsa)-[\w-]+ [A-Za-z0-9+/=]+( [^\n]*)?$/,
                  'must be one OpenSSH public key line',
                ),
            )
            .default([]),
        })
        .strict()
        .default({ sshAuthorizedKeys: [] }),
    })
    .strict(),
]);

/** A virtual machine. */
export const VmSchema = z
  .object({
    name,
    host: name,
    cpus: z.number().int().min(1).max(64).default(1),
    memoryMiB: z
      .number()
      .int()
      .min(64)
      .max(1024 * 1024)
      .default(256),
    image: ImageSchema.default({ kind: 'test-guest' }),
    disks: z.array(DiskSchema).default([]),
    nics: z.array(NicSchema).min(1, 'a VM needs at least one NIC').max(8),
    /** Desired power state. */
    state: z.enum(['running', 'stopped']).default('running'),
  })
  .strict();

/** A simulated physical machine on the lab LAN. */
export const LabMachineSchema = z.object({ name, address: ipv4 }).strict();

/** The lab: namespaces standing in for physical machines, a LAN switch, and an upstream router. */
export const LabSchema = z
  .object({
    /** Short lab name; prefixes every namespace (`vl-<lab>-<machine>`). */
    name: z
      .string()
      .regex(/^[a-z][a-z0-9]{0,7}$/, 'must match ^[a-z][a-z0-9]{0,7}$ (it prefixes namespace names)'),
    lan: z.object({ cidr, gateway: ipv4, dhcp: dhcp.optional() }).strict(),
    /** The router's outside network and the one machine standing in for the internet. */
    upstream: z.object({ cidr, address: ipv4 }).strict(),
    hosts: z.array(LabMachineSchema).min(1),
    peers: z.array(LabMachineSchema).default([]),
  })
  .strict();

/** A whole vmlink spec file. */
export const SpecSchema = z
  .object({
    version: z.literal(1),
    hosts: z.array(HostSchema).min(1, 'at least one host is needed'),
    networks: z.array(NetworkSchema).default([]),
    vms: z.array(VmSchema).default([]),
    lab: LabSchema.optional(),
  })
  .strict();

/** A parsed, defaulted spec. */
export type Spec = z.infer<typeof SpecSchema>;
/** A host entry of a spec. */
export type HostSpec = z.infer<typeof HostSchema>;
/** A network entry of a spec. */
export type NetworkSpec = z.infer<typeof NetworkSchema>;
/** A NAT network entry. */
export type NatNetworkSpec = Extract<NetworkSpec, { mode: 'nat' }>;
/** A VM entry of a spec. */
export type VmSpec = z.infer<typeof VmSchema>;
/** A VM NIC entry. */
export type NicSpec = z.infer<typeof NicSchema>;
/** A port forward entry. */
export type ForwardSpec = z.infer<typeof ForwardSchema>;
/** The lab section. */
export type LabSpec = z.infer<typeof LabSchema>;
/** A VM image entry. */
export type ImageSpec = z.infer<typeof ImageSchema>;
