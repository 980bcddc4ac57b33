// What the explain looks at, gathered from the agents: the source's and the target's reports, side by side, each
// failure kept as the reason that host is a blocker (never thrown: the explain says it in plain words), and the
// guest's dirty rate as the source's hypervisor measures it (the estimate's; absent when it cannot be measured).

import { MIGRATION_DIRTY_RATE_S } from '../../shared/limits.js';
import { log } from '../../shared/log.js';
import type { Spec } from '../../spec/schema.js';
import type { AgentFactory } from '../hosts.js';
import type { MigrationFacts } from './explain.js';

/** The facts of moving `vm` from `from` to `to`, as both agents report them now. */
export async function gatherFacts(
  spec: Spec,
  agents: AgentFactory,
  req: { vm: string; from: string; to: string },
): Promise<MigrationFacts> {
  const hosts = spec.hosts.filter((h) => h.role !== 'storage').map((h) => h.name);
  const ask = (host: string) =>
    hosts.includes(host)
      ? agents(spec, host).report()
      : Promise.reject(new Error(`${host} is not a compute host`));
  const [source, target, dirtyRate] = await Promise.allSettled([
    ask(req.from),
    ask(req.to),
    // Measured alongside the reports (it takes a second); a VM that is not running there just has no figure.
    hosts.includes(req.from)
      ? agents(spec, req.from).migrationDirtyRate?.(req.vm, MIGRATION_DIRTY_RATE_S)
      : undefined,
  ]);
  if (dirtyRate.status === 'rejected')
    log.debug({ vm: req.vm, err: (dirtyRate.reason as Error).message }, 'no dirty rate for the explain');
  const rate = dirtyRate.status === 'fulfilled' ? dirtyRate.value : undefined;
  return {
    ...req,
    hosts,
    ...(source.status === 'fulfilled'
      ? { source: source.value }
      : { sourceError: (source.reason as Error).message }),
    ...(target.status === 'fulfilled'
      ? { target: target.value }
      : { targetError: (target.reason as Error).message }),
    ...(rate !== undefined ? { dirtyRateMiBps: Math.round(rate * 10) / 10 } : {}),
  };
}
