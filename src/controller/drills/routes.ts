// `POST /v1/drills`: a failure drill in the spec's lab, as a task (its result is the DrillReport). Admin only and
// unscoped (auth/roles.ts): it kills processes of the lab's hosts and controllers.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { DrillKinds } from '../../shared/cluster.js';
import { accepted } from '../api-answers.js';
import type { TaskContext } from '../tasks.js';
import { SpecBodySchema } from '../wire.js';
import type { DrillControl } from './control.js';

/** Body of `POST /v1/drills`: the kind, its target (host, controller or etcd member), and the lab's spec. */
export const DrillBodySchema = SpecBodySchema.extend({
  kind: z.enum(DrillKinds),
  target: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be a host, controller or etcd member name (or `active`)')
    .describe('host (host-failure, partition), controller name or `active`, or etcd member'),
  duringApply: z
    .boolean()
    .default(false)
    .describe('controller-failure: kill the active controller while it applies the spec'),
}).strict();
/** A drill request. */
export type DrillBody = z.infer<typeof DrillBodySchema>;

/** What the drill route needs: the drills, and the API's task starter (a `drill` task is a mutating one). */
export interface DrillRouteDeps {
  drills: DrillControl;
  startTask(body: (ctx: TaskContext) => Promise<unknown>): { taskId: string };
}

/** Adds `POST /v1/drills` to `app`. */
export function addDrillRoutes(app: FastifyInstance, d: DrillRouteDeps): void {
  app.withTypeProvider<ZodTypeProvider>().post(
    '/v1/drills',
    {
      schema: {
        summary:
          "Inject a failure in the spec's lab, measure detection and recovery from outside, check the invariants and restore the lab (task; its result is the drill's report)",
        body: DrillBodySchema,
        response: accepted,
      },
    },
    async (req, reply) => {
      // A bad spec or target fails the request itself (422), not a task.
      const checked = await d.drills.check(req.body);
      return reply.status(202).send(d.startTask((ctx) => d.drills.run(checked, ctx)));
    },
  );
}
