// `vmlink security-group list`: each group of the applied spec, and on each host that holds it whether the host
// has it as the spec wants it (the plan's own hash), from the hosts' reports.
import { securityGroupConfigHash } from '../plan/hash.js';
import type { DesiredState } from '../plan/resolve.js';
import type { Spec } from '../spec/schema.js';
import type { HostStatus } from './views.js';

/** One group on one host: `applied` as the spec wants it, `outdated` (another version, or problems), `missing`, or `unknown` (no report). */
export interface SecurityGroupHostState {
  host: string;
  state: 'applied' | 'outdated' | 'missing' | 'unknown';
  problems?: string[];
}

/** One group as `security-group list` shows it. */
export interface SecurityGroupListItem {
  name: string;
  description?: string;
  rules: number;
  /** NICs in the group, on every host. */
  members: number;
  /** Hosts that hold it (their NICs use it, or a rule of a group they hold names it). */
  hosts: SecurityGroupHostState[];
}

/** The groups of `spec` with their state on each host that should hold them. */
export function securityGroupViews(
  spec: Spec,
  desired: DesiredState,
  hosts: readonly HostStatus[],
): SecurityGroupListItem[] {
  const status = new Map(hosts.map((h) => [h.name, h]));
  return spec.securityGroups.map((g) => {
    const onHosts = Object.entries(desired).flatMap(([host, d]): SecurityGroupHostState[] => {
      const want = d.securityGroups?.find((x) => x.name === g.name);
      if (!want) return [];
      const report = status.get(host)?.report;
      if (!report) return [{ host, state: 'unknown' }];
      const seen = report.securityGroups?.find((x) => x.name === g.name);
      if (!seen) return [{ host, state: 'missing' }];
      const ok = seen.problems.length === 0 && seen.configHash === securityGroupConfigHash(want);
      return [
        ok
          ? { host, state: 'applied' }
          : {
              host,
              state: 'outdated',
              ...(seen.problems.length ? { problems: seen.problems } : {}),
            },
      ];
    });
    const members = desired[onHosts[0]?.host ?? '']?.securityGroups?.find(
      (x) => x.name === g.name,
    )?.memberMacs;
    return {
      name: g.name,
      ...(g.description ? { description: g.description } : {}),
      rules: g.rules.length,
      members: members?.length ?? 0,
      hosts: onHosts.sort((a, b) => a.host.localeCompare(b.host)),
    };
  });
}
