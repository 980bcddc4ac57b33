// The balancing routes of the controller API: `GET /v1/balance` (the plan, read-only) and `POST /v1/balance/apply`
// (operator: runs the plan's live migrations). Rules in auth/roles.ts.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { ErrorBodySchema } from '../../shared/errors.js';
import { principalOf } from '../auth/access.js';
import { BalanceApplyAnswerSchema, BalancePlanViewSchema } from '../wire-balance.js';
import type { BalanceControl } from './service.js';

const answers = <S>(ok: S) => ({ 200: ok, '4xx': ErrorBodySchema, '5xx': ErrorBodySchema });

/** Registers the balancing routes. */
export function addBalanceRoutes(app: FastifyInstance, balance: BalanceControl): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.get(
    '/v1/balance',
    {
      schema: {
        summary:
          'The balance plan: host CPU and memory spreads, the live migrations that narrow them, and why',
        response: answers(BalancePlanViewSchema),
      },
    },
    async () => balance.plan(),
  );
  api.post(
    '/v1/balance/apply',
    {
      schema: {
        summary:
          'Plans and runs the balance moves as live migrations, in order, stopping at the first failure',
        response: answers(BalanceApplyAnswerSchema),
      },
    },
    async (req) => balance.apply(principalOf(req)?.who ?? 'unknown'),
  );
}
