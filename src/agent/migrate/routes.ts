// The migration routes of an agent (the list and who may call them: agent/wire-migrate.ts's header). The stream
// crosses as MIGRATION_STREAM_TYPE, handed through unparsed and bounded by the service; everything else is strict JSON.

import websocket from '@fastify/websocket';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { STREAM_MAX_PAYLOAD_BYTES } from '../../shared/console-wire.js';
import { ErrorBodySchema, ForbiddenError, InvalidRequestError } from '../../shared/errors.js';
import { callerOf } from '../backup/routes.js';
import { OkSchema } from '../wire.js';
import {
  AbortAnswerSchema,
  DirtyRateRequestSchema,
  DirtyRateSchema,
  IncomingRequestSchema,
  MIGRATION_STREAM_TYPE,
  MigrationIdSchema,
  MigrationJobSchema,
  OutgoingRequestSchema,
  ResumeRequestSchema,
  STREAM_ACK_TYPE,
  STREAM_ACKS_HEADER,
  StreamAnswerSchema,
} from '../wire-migrate.js';
import type { MigrationService } from './service.js';

const answers = <S>(ok: S) => ({ 200: ok, '4xx': ErrorBodySchema, '5xx': ErrorBodySchema });
const IdParams = z.object({ id: MigrationIdSchema }).strict();

/** Registers the migration routes on `base`. */
export async function registerMigrationRoutes(base: FastifyInstance, svc: MigrationService): Promise<void> {
  // The disk tunnels are websockets; the plugin (shared with the console route, same options) is registered once.
  if (!base.hasDecorator('websocketServer'))
    await base.register(websocket, { options: { maxPayload: STREAM_MAX_PAYLOAD_BYTES } });
  await base.register(async (scope) => {
    // The stream is handed to the service as it arrives: never buffered whole.
    scope.addContentTypeParser(MIGRATION_STREAM_TYPE, (_req, payload, done) => done(null, payload));
    const app = scope.withTypeProvider<ZodTypeProvider>();
    const controllerOnly = (req: Parameters<typeof callerOf>[0]) => {
      if (callerOf(req).kind === 'host')
        throw new ForbiddenError('only the controller may steer a migration; hosts may only send its stream');
    };
    app.post(
      '/v1/migrations/incoming',
      { schema: { body: IncomingRequestSchema, response: answers(OkSchema) } },
      async (req) => {
        controllerOnly(req);
        await svc.prepare(req.body);
        return { ok: true as const };
      },
    );
    app.put(
      '/v1/migrations/:id/stream',
      { schema: { params: IdParams, response: answers(StreamAnswerSchema) } },
      async (req, reply) => {
        const caller = callerOf(req);
        if (caller.kind === 'controller')
          throw new ForbiddenError('a migration stream comes from the source host, not the controller');
        const body = req.body as NodeJS.ReadableStream as import('node:stream').Readable;
        const peer = caller.kind === 'host' ? caller.name : undefined;
        if (req.headers[STREAM_ACKS_HEADER] !== '1')
          return { receivedBytes: await svc.receive(req.params.id, peer, body) };
        // Acked stream (wire-migrate.ts): the answer starts now, acks as the bytes come, the outcome last.
        const raw = reply.raw;
        const line = (v: unknown) => `${JSON.stringify(v)}\n`;
        svc.assertStream(req.params.id, peer);
        const done = svc.receive(req.params.id, peer, body, (n) => raw.write(line({ ack: n })));
        reply.hijack();
        raw.writeHead(200, { 'content-type': STREAM_ACK_TYPE, [STREAM_ACKS_HEADER]: '1' });
        raw.flushHeaders();
        try {
          raw.end(line({ receivedBytes: await done }));
        } catch (e) {
          raw.end(line({ error: (e as Error).message.slice(0, 4000) }));
        }
        return reply;
      },
    );
    // Block migration: one NBD connection of the source QEMU's, from the source host's agent only; refused before the
    // upgrade (an HTTP error body) when it is not.
    scope.get(
      '/v1/migrations/:id/nbd',
      {
        websocket: true,
        schema: { hide: true },
        preHandler: async (req) => {
          const params = IdParams.safeParse(req.params);
          if (!params.success) throw new InvalidRequestError('disk tunnel: expected /v1/migrations/UUID/nbd');
          const caller = callerOf(req);
          svc.assertTunnel(params.data.id, caller.kind === 'host' ? caller.name : undefined);
        },
      },
      async (socket, req) => {
        const caller = callerOf(req);
        await svc.tunnel(
          (req.params as { id: string }).id,
          caller.kind === 'host' ? caller.name : undefined,
          socket,
        );
      },
    );
    app.post(
      '/v1/migrations/:id/resume',
      { schema: { params: IdParams, body: ResumeRequestSchema, response: answers(OkSchema) } },
      async (req) => {
        controllerOnly(req);
        await svc.resume(req.params.id, req.body.fence, req.body.timeoutMs, req.body.onArrival === true);
        return { ok: true as const };
      },
    );
    app.post(
      '/v1/migrations/:id/abort',
      { schema: { params: IdParams, response: answers(AbortAnswerSchema) } },
      async (req) => {
        controllerOnly(req);
        const { ran } = await svc.abortIncoming(req.params.id, 'the controller rolled the migration back');
        return { ok: true as const, ...(ran ? { ran } : {}) };
      },
    );
    app.post(
      '/v1/migrations/outgoing',
      { schema: { body: OutgoingRequestSchema, response: answers(MigrationJobSchema) } },
      async (req) => {
        controllerOnly(req);
        return svc.start(req.body);
      },
    );
    app.post(
      '/v1/migrations/dirty-rate',
      { schema: { body: DirtyRateRequestSchema, response: answers(DirtyRateSchema) } },
      async (req) => {
        controllerOnly(req);
        const rate = await svc.dirtyRate(req.body.vm, req.body.seconds);
        return rate === undefined ? {} : { dirtyRateMiBps: rate };
      },
    );
    app.get(
      '/v1/migrations/:id',
      { schema: { params: IdParams, response: answers(MigrationJobSchema) } },
      async (req) => {
        controllerOnly(req);
        return svc.job(req.params.id);
      },
    );
    app.post(
      '/v1/migrations/:id/rollback',
      { schema: { params: IdParams, response: answers(OkSchema) } },
      async (req) => {
        controllerOnly(req);
        await svc.rollback(req.params.id);
        return { ok: true as const };
      },
    );
  });
}
