// `GET /v1/metrics`: the site's metrics in Prometheus text format (role read-only, on the socket and the TCP
// listener). The page is rendered from the collector's cache: a scrape never waits for an agent.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { prometheusContentType } from 'prom-client';
import { z } from 'zod';
import { answers } from '../api-answers.js';

/** Registers `GET /v1/metrics`, answered with `render()`. */
export function addMetricsRoutes(app: FastifyInstance, metrics: { render(): Promise<string> }): void {
  app.withTypeProvider<ZodTypeProvider>().get(
    '/v1/metrics',
    {
      schema: {
        summary: "The site's metrics (Prometheus text format 0.0.4)",
        produces: ['text/plain'],
        response: answers(z.string()),
      },
    },
    async (_req, reply) => reply.type(prometheusContentType).send(await metrics.render()),
  );
}
