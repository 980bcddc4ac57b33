// The drill runners by kind: one entry point for the route, the tests and the bench.
import type { DrillKind, DrillReport } from '../../shared/cluster.js';
import { controllerFailureDrill } from './controller-failure.js';
import { etcdMemberFailureDrill } from './etcd-member-failure.js';
import { hostFailureDrill } from './host-failure.js';
import { partitionDrill } from './partition.js';
import type { DrillEnv, DrillRunners } from './types.js';

/** Each kind's runner. */
export const drillRunners = {
  'host-failure': hostFailureDrill,
  partition: partitionDrill,
  'controller-failure': controllerFailureDrill,
  'etcd-member-failure': etcdMemberFailureDrill,
} satisfies DrillRunners;

/** Runs one drill; the sampler is stopped whatever happens. */
export async function runDrill(env: DrillEnv, kind: DrillKind, target: string): Promise<DrillReport> {
  try {
    return await drillRunners[kind](env, target);
  } finally {
    await env.sampler.stop();
  }
}
