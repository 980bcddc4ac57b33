// Security groups on one host: every network backend that supports them holds every group (a host may run linux
// and ovs networks side by side, and a group's members may sit on either), and a port with groups is refused on a
// backend that cannot filter it. The plan's view of them is merged from every such backend.
import type { NetworkDriver, OpContext } from '../drivers/network/types.js';
import { InvalidStateError, UnsupportedError } from '../shared/errors.js';
import type { NetworkBackend, NicConfig, ObservedSecurityGroup } from '../shared/model.js';
import type { SecurityGroupConfig } from '../shared/security-groups.js';

type Backends = Partial<Record<NetworkBackend, NetworkDriver>>;

/** Backends of the host that realise security groups, in name order. */
function groupBackends(networks: Backends): Array<[NetworkBackend, NetworkDriver]> {
  return (Object.entries(networks) as Array<[NetworkBackend, NetworkDriver]>)
    .filter(([, d]) => d.ensureSecurityGroup !== undefined)
    .sort(([a], [b]) => a.localeCompare(b));
}

/** Creates or updates `group` on every backend that has groups; refused where none has. */
export async function ensureSecurityGroup(
  host: string,
  networks: Backends,
  group: SecurityGroupConfig,
  configHash: string,
  ctx: OpContext,
): Promise<void> {
  const backends = groupBackends(networks);
  if (backends.length === 0)
    throw new UnsupportedError(
      `security group ${group.name}: no network backend of host ${host} supports security groups (it has: ${Object.keys(networks).sort().join(', ') || 'none'}); upgrade its agent, or remove the groups from NICs on ${host}`,
      `securityGroup/${group.name}`,
    );
  for (const [, d] of backends) await d.ensureSecurityGroup?.(group, configHash, ctx);
}

/** Deletes `name` from every backend that has groups; refused while a VM of the host still names it. */
export async function deleteSecurityGroup(
  networks: Backends,
  name: string,
  usedBy: readonly string[],
  ctx: OpContext,
): Promise<void> {
  if (usedBy.length > 0)
    throw new InvalidStateError(
      `security group ${name} is still used by VM(s) ${usedBy.join(', ')}`,
      `securityGroup/${name}`,
    );
  for (const [, d] of groupBackends(networks)) await d.deleteSecurityGroup?.(name, ctx);
}

/**
 * Refuses a port with groups on a backend that cannot filter it: its guest would get no default-deny at all.
 * Called before every port is made or changed.
 */
export function assertPortGroupsSupported(where: string, driver: NetworkDriver, nic: NicConfig): void {
  if (!nic.securityGroups?.length || driver.ensureSecurityGroup) return;
  const backend = nic.backend ?? 'linux';
  throw new UnsupportedError(
    `NIC ${nic.tap} of network ${nic.network} has security groups (${nic.securityGroups.join(', ')}), which the ${backend} network backend of ${where} does not support; upgrade its agent, or remove the groups from this NIC`,
    `securityGroup/${nic.securityGroups[0]}`,
  );
}

/**
 * The groups realised on the host, merged over its backends: one entry per group, with a problem where a backend
 * that has groups lacks it or holds another version of it (the plan then ensures it again).
 */
export async function observeSecurityGroups(networks: Backends): Promise<ObservedSecurityGroup[]> {
  const backends = groupBackends(networks).filter(([, d]) => d.listSecurityGroups !== undefined);
  const lists = await Promise.all(
    backends.map(async ([b, d]) => [b, (await d.listSecurityGroups?.()) ?? []] as const),
  );
  const names = [...new Set(lists.flatMap(([, l]) => l.map((g) => g.config.name)))].sort();
  return names.map((name) => {
    const held = lists.flatMap(([b, l]) => {
      const g = l.find((x) => x.config.name === name);
      return g ? [{ backend: b, ...g }] : [];
    });
    const first = held[0]!;
    const problems = lists.flatMap(([b]) => {
      const g = held.find((h) => h.backend === b);
      if (!g) return [`not on the ${b} backend`];
      return g.configHash === first.configHash ? [] : [`the ${b} backend holds another version`];
    });
    return { name, configHash: first.configHash, problems, config: first.config };
  });
}
