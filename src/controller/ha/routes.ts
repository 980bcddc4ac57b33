// The HA routes of the controller API: `GET /v1/ha` (read-only) and `PUT /v1/hosts/:name/maintenance` (admin, host
// scope). Rules in auth/roles.ts.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { ErrorBodySchema } from '../../shared/errors.js';
import { principalOf } from '../auth/access.js';
import type { Controller } from '../controller.js';
import {
  HaQuerySchema,
  HaViewSchema,
  HostParamsSchema,
  MaintenanceAnswerSchema,
  MaintenanceBodySchema,
} from '../wire-ha.js';

const answers = <S>(ok: S) => ({ 200: ok, '4xx': ErrorBodySchema, '5xx': ErrorBodySchema });

/** Registers the HA routes. */
export function addHaRoutes(app: FastifyInstance, controller: Controller): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.get(
    '/v1/ha',
    {
      schema: {
        summary:
          "HA: each VM's owner host, token and policy; hosts' leases and maintenance; the last HA decisions",
        querystring: HaQuerySchema,
        response: answers(HaViewSchema),
      },
    },
    async (req) => controller.ha.view(req.query.decisions),
  );
  api.put(
    '/v1/hosts/:name/maintenance',
    {
      schema: {
        summary: 'Maintenance on (HA moves the host’s VMs elsewhere, places nothing there) or off',
        params: HostParamsSchema,
        body: MaintenanceBodySchema,
        response: answers(MaintenanceAnswerSchema),
      },
    },
    async (req) =>
      controller.ha.maintenance(req.params.name, req.body.on, principalOf(req)?.who ?? 'unknown'),
  );
}
