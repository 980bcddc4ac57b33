// `POST /v1/vms/:name/disks/:disk/move {pool}`: a VM's disk into a dir pool of its host (live while it runs), as a task whose
// result is the MoveDiskReport (controller/move-disk.ts).
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { answers } from './api-answers.js';
import { type MoveDiskDeps, moveDisk } from './move-disk.js';
import type { TaskContext } from './tasks.js';
import { TaskAcceptedSchema } from './wire.js';
import { MoveDiskParamsSchema, MoveDiskRequestSchema } from './wire-move-disk.js';

/** What the route needs: the move's dependencies and the task runner (a storage task: never beside an apply). */
export interface MoveDiskRouteDeps {
  deps: Omit<MoveDiskDeps, 'progress'>;
  startTask: (body: (ctx: TaskContext) => Promise<unknown>) => { taskId: string };
}

/** Adds the route to `app`. */
export function addMoveDiskRoutes(app: FastifyInstance, r: MoveDiskRouteDeps): void {
  app.withTypeProvider<ZodTypeProvider>().post(
    '/v1/vms/:name/disks/:disk/move',
    {
      schema: {
        summary:
          "Move a VM's disk into a dir pool of its host (live while it runs), as the volume the spec expects there (a task)",
        params: MoveDiskParamsSchema,
        body: MoveDiskRequestSchema,
        response: answers(TaskAcceptedSchema, 202),
      },
    },
    async (req, reply) =>
      reply
        .status(202)
        .send(
          r.startTask((ctx) =>
            moveDisk(
              { ...r.deps, progress: (note) => ctx.progress(note) },
              { vm: req.params.name, disk: req.params.disk, pool: req.body.pool },
            ),
          ),
        ),
  );
}
