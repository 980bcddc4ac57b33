// Security groups: names unique, every reference (a NIC's groups, a rule's remote group) known, rules consistent,
// and groups only on NICs that port security binds to their addresses (see shared/security-groups.ts for why).
import { SECURITY_GROUP_MEMBERS_MAX } from '../../shared/security-groups.js';
import { formatCidr, parseCidr } from '../net.js';
import type { Spec } from '../schema.js';
import { type Add, dupes, hostBitsMessage } from './common.js';

/** Every check of `securityGroups:` and of `vms[].nics[].securityGroups`. */
export function checkSecurityGroups(spec: Spec, add: Add) {
  dupes(
    spec.securityGroups,
    (g) => g.name,
    (i) => `securityGroups[${i}].name`,
    'security group name',
    add,
  );
  const known = new Set(spec.securityGroups.map((g) => g.name));
  const list = [...known].join(', ') || 'none declared';
  const unknown = (g: string) =>
    `unknown security group "${g}" (groups: ${list}); declare it under securityGroups: or remove the reference`;

  spec.securityGroups.forEach((g, gi) => {
    g.rules.forEach((r, ri) => {
      const base = `securityGroups[${gi}].rules[${ri}]`;
      if (r.ports !== undefined && r.protocol !== 'tcp' && r.protocol !== 'udp')
        add(
          `${base}.ports`,
          `ports need protocol tcp or udp (this rule is ${r.protocol}); set protocol or remove ports`,
        );
      if (r.cidr !== undefined && r.group !== undefined)
        add(
          `${base}.group`,
          'give at most one remote: cidr (addresses) or group (member NICs), not both; split it into two rules',
        );
      if (r.group !== undefined && !known.has(r.group)) add(`${base}.group`, unknown(r.group));
      const c = r.cidr === undefined ? undefined : parseCidr(r.cidr);
      if (c && r.cidr !== undefined && formatCidr(c) !== r.cidr)
        add(`${base}.cidr`, hostBitsMessage(r.cidr, c));
    });
  });

  // Every host holds every member of the groups it uses: bounded like the agent's wire.
  const members = new Map<string, number>();
  for (const vm of spec.vms)
    for (const nic of vm.nics)
      for (const g of nic.securityGroups ?? []) members.set(g, (members.get(g) ?? 0) + 1);
  spec.securityGroups.forEach((g, gi) => {
    const n = members.get(g.name) ?? 0;
    if (n > SECURITY_GROUP_MEMBERS_MAX)
      add(
        `securityGroups[${gi}].name`,
        `group "${g.name}" has ${n} member NICs, more than ${SECURITY_GROUP_MEMBERS_MAX}; split it into several groups`,
      );
  });

  spec.vms.forEach((vm, vi) => {
    vm.nics.forEach((nic, ni) => {
      const groups = nic.securityGroups ?? [];
      if (groups.length === 0) return;
      const path = `vms[${vi}].nics[${ni}].securityGroups`;
      groups.forEach((g, k) => {
        if (!known.has(g)) add(`${path}[${k}]`, unknown(g));
      });
      if (nic.trunk !== undefined)
        add(
          path,
          'a trunk port is not filtered, so it cannot have security groups; put the groups on access NICs instead',
        );
      else if (nic.portSecurity === false)
        add(
          path,
          "security groups need port security (remote-group rules and replies trust the port's addresses); remove portSecurity: false or the groups",
        );
    });
  });
}
