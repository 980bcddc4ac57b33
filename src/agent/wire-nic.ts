// A VM's NIC as it crosses the agent's wire (VmConfig.nics): strict, every field bounded with the spec's own checks.
import { z } from 'zod';
import {
  ADDRESS_PREFIX_MAX,
  ADDRESS_PREFIX_MIN,
  MTU_MIN,
  NETWORK_MTU_MAX,
  TRUNK_NETWORKS_MAX,
  VLAN_ID_MAX,
  VLAN_ID_MIN,
} from '../shared/limits.js';
import type { NicConfig } from '../shared/model.js';
import { NIC_ALLOWED_ADDRESSES_MAX } from '../shared/port-security.js';
import { NIC_SECURITY_GROUPS_MAX } from '../shared/security-groups.js';
import { Ipv4Schema, MacSchema, NAME_PATTERN } from '../spec/schema.js';

const name = z.string().regex(NAME_PATTERN);
// Which bridge and tap a NIC may name is checked in wire-checks.ts.
const devName = z.string().regex(/^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$/);
const ip = Ipv4Schema;
const vlanId = z.number().int().min(VLAN_ID_MIN).max(VLAN_ID_MAX);

/** NicConfig as it crosses the wire (what no schema can check: wire-checks.ts). */
export const NicConfigSchema = z
  .object({
    network: name,
    backend: z.enum(['linux', 'ovs']),
    bridge: devName,
    vlan: vlanId.optional(),
    trunk: z
      .object({
        networks: z.array(name).min(1).max(TRUNK_NETWORKS_MAX),
        vlans: z.array(vlanId).min(1).max(TRUNK_NETWORKS_MAX),
      })
      .strict()
      .optional(),
    tap: devName,
    mac: MacSchema,
    mtu: z.number().int().min(MTU_MIN).max(NETWORK_MTU_MAX),
    staticIp: z
      .object({
        address: ip,
        prefixLength: z.number().int().min(ADDRESS_PREFIX_MIN).max(ADDRESS_PREFIX_MAX),
        gateway: ip.optional(),
      })
      .strict()
      .optional(),
    reservedIp: ip.optional(),
    portSecurity: z.literal(false).optional(),
    allowedAddresses: z.array(ip).max(NIC_ALLOWED_ADDRESSES_MAX).optional(),
    securityGroups: z.array(name).max(NIC_SECURITY_GROUPS_MAX).optional(),
  })
  .strict() satisfies z.ZodType<NicConfig>;
