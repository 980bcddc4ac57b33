// The spec's security groups (`securityGroups:`): named rule sets attached to VM NICs.
import { z } from 'zod';
import { PORT_MAX, PORT_MIN } from '../shared/limits.js';
import { RULE_PORTS_MAX, SECURITY_GROUP_RULES_MAX } from '../shared/security-groups.js';
import { ipv4, name, port } from './schema-primitives.js';

/** A destination port (80) or an inclusive range ("8000-8100") of a security group rule. */
const rulePort = z.union([
  port,
  z
    .string()
    .regex(/^\d{1,5}-\d{1,5}$/, 'must be a port (80) or a range such as "8000-8100"')
    .refine((r) => {
      const [a, b] = r.split('-').map(Number) as [number, number];
      return a >= PORT_MIN && b <= PORT_MAX && a <= b;
    }, `must be a range of ports ${PORT_MIN}-${PORT_MAX}, low end first`),
]);

/** One rule of a security group: what it lets in (ingress) or out (egress) of its member NICs. */
export const SecurityGroupRuleSchema = z
  .object({
    direction: z.enum(['ingress', 'egress']).default('ingress'),
    protocol: z.enum(['tcp', 'udp', 'icmp', 'any']).default('any'),
    /** tcp/udp destination ports; absent: all. */
    ports: z.array(rulePort).min(1).max(RULE_PORTS_MAX).optional(),
    /** Remote addresses (source of ingress, destination of egress). At most one of cidr and group; neither: any. */
    cidr: z
      .string()
      .refine((s) => {
        const m = /^([\d.]+)\/(\d{1,2})$/.exec(s);
        return !!m && ipv4.safeParse(m[1]).success && Number(m[2]) <= 32;
      }, 'must be an IPv4 network such as 10.0.0.0/24 (0.0.0.0/0 for any)')
      .optional(),
    /** Remote group: the other end is a NIC of this group (it may be the rule's own group). */
    group: name.optional(),
    description: z.string().max(256).optional(),
  })
  .strict();

/** A named set of rules attached to VM NICs (`vms[].nics[].securityGroups`). */
export const SecurityGroupSchema = z
  .object({
    name,
    description: z.string().max(256).optional(),
    rules: z.array(SecurityGroupRuleSchema).max(SECURITY_GROUP_RULES_MAX).default([]),
  })
  .strict();
