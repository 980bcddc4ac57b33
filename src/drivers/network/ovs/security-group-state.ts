import { z } from 'zod';
import { InvalidRequestError } from '../../../shared/errors.js';
import {
  RULE_PORTS_MAX,
  SECURITY_GROUP_MEMBERS_MAX,
  SECURITY_GROUP_RULES_MAX,
  type SecurityGroupConfig,
} from '../../../shared/security-groups.js';
import { SecurityGroupStore } from '../security-group-store.js';

/** The OVS backend's directory of applied security groups, under the agent state directory. */
export const OVS_SECURITY_GROUPS_DIR = 'ovs-security-groups';

// The spec's name rule (spec/schema.ts NAME_PATTERN): the group name becomes a file name and an external_ids value.
const GROUP_NAME = /^[a-z][a-z0-9-]{0,30}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const CIDR = new RegExp(`^${OCTET}(\\.${OCTET}){3}/(3[0-2]|[12]?\\d)$`);
const port = z.number().int().min(1).max(65_535);

const ruleSchema = z
  .object({
    direction: z.enum(['ingress', 'egress']),
    protocol: z.enum(['tcp', 'udp', 'icmp', 'any']),
    ports: z
      .array(
        z
          .object({ from: port, to: port })
          .strict()
          .refine((r) => r.from <= r.to, 'range low end first'),
      )
      .min(1)
      .max(RULE_PORTS_MAX)
      .optional(),
    cidr: z.string().regex(CIDR, 'must be an IPv4 network such as 10.0.0.0/24').optional(),
    group: z.string().regex(GROUP_NAME).optional(),
  })
  .strict()
  .refine((r) => !(r.cidr !== undefined && r.group !== undefined), 'cidr and group are exclusive')
  .refine(
    (r) => r.ports === undefined || r.protocol === 'tcp' || r.protocol === 'udp',
    'ports need tcp or udp',
  );

/** The shape of a group the backend accepts. */
export const securityGroupSchema = z
  .object({
    name: z.string().regex(GROUP_NAME),
    rules: z.array(ruleSchema).max(SECURITY_GROUP_RULES_MAX),
    memberMacs: z.array(z.string().regex(MAC)).max(SECURITY_GROUP_MEMBERS_MAX),
  })
  .strict();

/** Refuses a group the flows could not express safely, naming the field. */
export function validateSecurityGroup(group: SecurityGroupConfig): SecurityGroupConfig {
  const r = securityGroupSchema.safeParse(group);
  if (!r.success) {
    const i = r.error.issues[0]!;
    const name = typeof group?.name === 'string' ? group.name : '?';
    throw new InvalidRequestError(
      `security group ${JSON.stringify(name)}: ${i.path.join('.') || '(root)'}: ${i.message}`,
      `securityGroups.${name}`,
    );
  }
  return r.data as SecurityGroupConfig;
}

/** Refuses a group name that could not be one (before it is used as a file name). */
export function assertGroupName(name: string): void {
  if (!GROUP_NAME.test(name))
    throw new InvalidRequestError(`invalid security group name ${JSON.stringify(name)}`, 'securityGroups');
}

/** The applied groups of one agent's OVS backend, each checked again when read back (it becomes flow text). */
export function ovsSecurityGroupStore(stateDir: string): SecurityGroupStore {
  return new SecurityGroupStore(stateDir, OVS_SECURITY_GROUPS_DIR, validateSecurityGroup);
}
