// Security group operations of the OVS backend: record a group (or forget it) and rebuild the flow tables, undoing
// the record when the tables could not be rebuilt. The flows are security-group-flows.ts, the records
// security-group-state.ts; the caller holds the driver's queue.
import { InvalidRequestError } from '../../../shared/errors.js';
import { log } from '../../../shared/log.js';
import type { SecurityGroupConfig } from '../../../shared/security-groups.js';
import type { SecurityGroupStore } from '../security-group-store.js';
import type { OpContext } from '../types.js';
import { flowCount, SECURITY_GROUP_FLOWS_MAX } from './security-group-flows.js';

/** What the operations need from the driver. */
export interface OvsSecurityGroupHost {
  groups: SecurityGroupStore;
  /** Rebuilds the flow table of every bridge from its ports and the recorded groups. */
  syncAllFlows(ctx?: OpContext): Promise<void>;
}

/** Refuses a group whose rules (or those of groups naming it as remote) would make too many flows on one port. */
function assertFlowBudget(g: SecurityGroupConfig, all: ReadonlyMap<string, SecurityGroupConfig>): void {
  for (const x of all.values()) {
    if (x.name !== g.name && !x.rules.some((r) => r.group === g.name)) continue;
    const n = flowCount(x, all);
    if (n > SECURITY_GROUP_FLOWS_MAX)
      throw new InvalidRequestError(
        `security group ${x.name}: its rules would make ${n} flows per port (most ${SECURITY_GROUP_FLOWS_MAX}); ` +
          'use fewer remote group members or port ranges',
        `securityGroups.${x.name}`,
      );
  }
}

/** Records `g` (validated) and rebuilds the tables; on failure the previous record and tables come back. */
export async function applySecurityGroup(
  host: OvsSecurityGroupHost,
  g: SecurityGroupConfig,
  configHash: string,
  ctx?: OpContext,
): Promise<void> {
  ctx?.signal?.throwIfAborted();
  const prev = await host.groups.read(g.name);
  const all = await host.groups.byName();
  all.set(g.name, g);
  assertFlowBudget(g, all);
  await host.groups.write({ config: g, configHash });
  try {
    await host.syncAllFlows(ctx);
  } catch (e) {
    if (prev) await host.groups.write(prev);
    else await host.groups.remove(g.name);
    await host.syncAllFlows().catch((err: unknown) => {
      log.warn({ err, group: g.name }, 'ovs: flows not restored after a failed security group change');
    });
    throw e;
  }
}

/** Forgets a group and rebuilds the tables (ports still naming it allow nothing inbound); missing is fine. */
export async function removeSecurityGroup(
  host: OvsSecurityGroupHost,
  name: string,
  ctx?: OpContext,
): Promise<void> {
  ctx?.signal?.throwIfAborted();
  if (!(await host.groups.read(name))) return;
  await host.groups.remove(name);
  await host.syncAllFlows(ctx);
}
