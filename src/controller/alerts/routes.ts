// The alert routes of the controller API (controller/wire-observe.ts): the view is read-only; silences and acks are
// operator changes (auth/roles.ts), audited by the access hooks like every change.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { answers } from '../api-answers.js';
import { principalOf } from '../auth/access.js';
import { AckRequestSchema, AlertsViewSchema, SilenceRequestSchema, SilenceSchema } from '../wire-observe.js';
import type { AlertEngine } from './engine.js';

const SilenceParamsSchema = z.object({ id: z.string().regex(/^[a-z0-9-]{1,64}$/) }).strict();

/** Adds `/v1/alerts` (view), `/v1/alerts/silences` (create, delete) and `/v1/alerts/ack`. */
export function addAlertRoutes(app: FastifyInstance, alerts: AlertEngine): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const who = (req: Parameters<typeof principalOf>[0]) => principalOf(req)?.who ?? 'anonymous';
  api.get(
    '/v1/alerts',
    {
      schema: {
        summary:
          'Alert rules of the applied spec, their instances (resolved ones for an hour) and live silences',
        response: answers(AlertsViewSchema),
      },
    },
    async () => alerts.view(),
  );
  api.post(
    '/v1/alerts/silences',
    {
      schema: {
        summary:
          "Silence a rule's instances (those with the given labels) for a while: they change state, no action runs",
        body: SilenceRequestSchema,
        response: answers(SilenceSchema),
      },
    },
    async (req) => alerts.silence(req.body, who(req)),
  );
  api.delete(
    '/v1/alerts/silences/:id',
    {
      schema: {
        summary: 'End a silence',
        params: SilenceParamsSchema,
        response: answers(z.object({ deleted: z.literal(true) }).strict()),
      },
    },
    async (req) => {
      await alerts.unsilence(req.params.id, who(req));
      return { deleted: true as const };
    },
  );
  api.post(
    '/v1/alerts/ack',
    {
      schema: {
        summary: "Acknowledge a rule's firing instances (those with the given labels) until they resolve",
        body: AckRequestSchema,
        response: answers(z.object({ acknowledged: z.number().int() }).strict()),
      },
    },
    async (req) => ({ acknowledged: await alerts.ack(req.body, who(req)) }),
  );
}
