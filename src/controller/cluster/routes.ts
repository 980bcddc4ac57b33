// `GET /v1/cluster`: this controller's role, the active controller, etcd's members and the hosts' leases. Standbys
// serve it too (cluster/active.ts), so any controller's socket tells where the active one is.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { answers } from '../api-answers.js';
import { ClusterViewSchema } from '../wire-cluster.js';
import type { ClusterRuntime } from './runtime.js';

/** Registers `GET /v1/cluster` (read-only). */
export function addClusterRoutes(app: FastifyInstance, runtime: ClusterRuntime): void {
  app.withTypeProvider<ZodTypeProvider>().get(
    '/v1/cluster',
    {
      schema: {
        summary:
          'This controller (active or standby), the active controller, etcd members and host leases; standbys answer too',
        response: answers(ClusterViewSchema),
      },
    },
    async () => runtime.view(),
  );
}
