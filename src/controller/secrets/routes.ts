// The secret routes of the controller API. All of them are admin-only (role map: /v1/secrets* -> admin).
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { ErrorBodySchema } from '../../shared/errors.js';
import type { Controller } from '../controller.js';
import { OkSchema } from '../wire.js';
import {
  SecretListSchema,
  SecretParamsSchema,
  SecretSetAnswerSchema,
  SecretSetBodySchema,
} from '../wire-access.js';

const answers = <S>(ok: S) => ({ 200: ok, '4xx': ErrorBodySchema, '5xx': ErrorBodySchema });

/** Registers `/v1/secrets` (admin): set, list, delete. No route ever answers a value. */
export function addSecretRoutes(app: FastifyInstance, controller: Controller): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  // admin
  api.post(
    '/v1/secrets/:name',
    {
      schema: {
        summary: 'Create or replace a secret (value in base64); the answer never carries it',
        params: SecretParamsSchema,
        body: SecretSetBodySchema,
        response: answers(SecretSetAnswerSchema),
      },
    },
    async (req) => {
      const r = await controller.secretSet(req.params.name, Buffer.from(req.body.value, 'base64'));
      return { name: req.params.name, created: r.created };
    },
  );
  // admin
  api.get(
    '/v1/secrets',
    {
      schema: { summary: 'Secrets: names, dates, users (never values)', response: answers(SecretListSchema) },
    },
    async () => controller.secretList(),
  );
  // admin
  api.delete(
    '/v1/secrets/:name',
    {
      schema: {
        summary: 'Delete a secret (refused while the applied spec uses it)',
        params: SecretParamsSchema,
        response: answers(OkSchema),
      },
    },
    async (req) => {
      await controller.secretDelete(req.params.name);
      return { ok: true as const };
    },
  );
}
