// The API of access itself: API tokens (create, list, revoke) and the audit trail. Admin only (see roles.ts).
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { answers } from '../api-answers.js';
import {
  AuditListSchema,
  AuditQuerySchema,
  TokenCreateBodySchema,
  TokenCreatedSchema,
  TokenInfoSchema,
  TokenListSchema,
  TokenParamsSchema,
} from '../wire-access.js';
import { principalOf } from './access.js';
import type { AuditLog } from './audit.js';
import type { TokenStore } from './tokens.js';

/** Adds `/v1/tokens` and `/v1/audit` to `app`. */
export function addAccessRoutes(
  app: FastifyInstance,
  tokens: TokenStore,
  audit: AuditLog,
  /** Called with a revoked token's name (its browser sessions end with it). */
  onRevoked: (name: string) => void = () => {},
): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.post(
    '/v1/tokens',
    {
      schema: {
        summary: 'Create an API token (its secret is in this answer only; the controller keeps a hash)',
        body: TokenCreateBodySchema,
        response: answers(TokenCreatedSchema),
      },
    },
    async (req) => tokens.create(req.body, principalOf(req)?.who ?? 'anonymous'),
  );
  api.get(
    '/v1/tokens',
    { schema: { summary: 'API tokens, without their secrets', response: answers(TokenListSchema) } },
    async () => tokens.list(),
  );
  api.delete(
    '/v1/tokens/:name',
    {
      schema: {
        summary: 'Revoke an API token (it stops working at once)',
        params: TokenParamsSchema,
        response: answers(TokenInfoSchema),
      },
    },
    async (req) => {
      const info = await tokens.revoke(req.params.name);
      onRevoked(info.name);
      return info;
    },
  );
  api.get(
    '/v1/audit',
    {
      schema: {
        summary: 'The audit trail of mutating calls, oldest first',
        querystring: AuditQuerySchema,
        response: answers(AuditListSchema),
      },
    },
    async (req) => audit.list(req.query.since, req.query.limit),
  );
}
