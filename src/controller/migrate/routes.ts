// The API of live migrations: `GET /v1/vms/:name/migrate?to=HOST` (the explain, changes nothing) and
// `POST /v1/vms/:name/migrate` (a task; its result is the MigrationReport).
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { NAME_PATTERN } from '../../spec/schema.js';
import { answers } from '../api-answers.js';
import type { TaskContext } from '../tasks.js';
import { TaskAcceptedSchema } from '../wire.js';
import { MigrateRequestSchema, MigrationExplainSchema } from '../wire-migrate.js';
import { explainFor, type MigrationDeps, runMigration } from './run.js';

const VmParams = z.object({ name: z.string().regex(NAME_PATTERN) }).strict();

/** What the routes need: the migration's dependencies and the task runner. */
export interface MigrationRouteDeps {
  deps: Omit<MigrationDeps, 'progress' | 'signal'>;
  startTask: (body: (ctx: TaskContext) => Promise<unknown>) => { taskId: string };
}

/** Adds the migration routes to `app`. */
export function addMigrationRoutes(app: FastifyInstance, r: MigrationRouteDeps): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.get(
    '/v1/vms/:name/migrate',
    {
      schema: {
        summary: 'The pre-flight explain of a live migration: each blocker with its fix (changes nothing)',
        params: VmParams,
        querystring: MigrateRequestSchema,
        response: answers(MigrationExplainSchema),
      },
    },
    async (req) => explainFor(r.deps, { vm: req.params.name, to: req.query.to }),
  );
  api.post(
    '/v1/vms/:name/migrate',
    {
      schema: {
        summary:
          'Live-migrate a running VM to another host (a task; refused while the explain has a blocker)',
        params: VmParams,
        body: MigrateRequestSchema,
        response: answers(TaskAcceptedSchema, 202),
      },
    },
    async (req, reply) =>
      reply.status(202).send(
        r.startTask((ctx) =>
          runMigration(
            {
              ...r.deps,
              signal: ctx.signal,
              progress: (s) =>
                ctx.progress(s.phase === 'transfer' ? `transfer: ${s.note}` : `${s.phase}: ${s.note}`),
            },
            { vm: req.params.name, to: req.body.to },
          ),
        ),
      ),
  );
}
