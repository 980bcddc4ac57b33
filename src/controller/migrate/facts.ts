// What the explain looks at, gathered from the agents: the source's and the target's reports, side by side, each
// failure kept as the reason that host is a blocker (never thrown: the explain says it in plain words).
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
  const [source, target] = await Promise.allSettled([ask(req.from), ask(req.to)]);
  return {
    ...req,
    hosts,
    ...(source.status === 'fulfilled'
      ? { source: source.value }
      : { sourceError: (source.reason as Error).message }),
    ...(target.status === 'fulfilled'
      ? { target: target.value }
      : { targetError: (target.reason as Error).message }),
  };
}
