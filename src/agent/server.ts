import { timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { createHttpApp } from '../shared/http/server.js';
import { addVersionGate } from '../shared/http/version-gate.js';
import { localVersion, VERSION } from '../shared/version.js';
import { NAME_PATTERN } from '../spec/schema.js';
import type { Agent } from './agent.js';
import { AgentActionSchema, GuestExecRequestSchema, ProbeRequestSchema } from './wire.js';

const VmParams = z.object({ name: z.string().regex(NAME_PATTERN) }).strict();
const NetworkParams = VmParams;
const ConfirmParams = z.object({ id: z.string().uuid() }).strict();

/** Options of the agent's API server. */
export interface AgentServerOptions {
  /** When set, every request must carry `Authorization: Bearer <token>` (the TCP listener). */
  token?: string;
}

/** The agent's HTTP API: parse with strict schemas, then dispatch to the Agent; nothing here touches the host. */
export function createAgentServer(agent: Agent, opts: AgentServerOptions = {}): FastifyInstance {
  const app = createHttpApp().withTypeProvider<ZodTypeProvider>();
  if (opts.token) {
    const expected = Buffer.from(`Bearer ${opts.token}`);
    app.addHook('onRequest', async (req, reply) => {
      const got = Buffer.from(req.headers.authorization ?? '');
      if (got.length !== expected.length || !timingSafeEqual(got, expected))
        await reply
          .status(401)
          .send({ error: { kind: 'invalid', message: 'missing or wrong bearer token for this agent' } });
    });
  }
  addVersionGate(app, 'wire', `agent of ${agent.host}`);
  app.get('/v1/health', async () => ({
    ok: true,
    version: VERSION,
    wire: localVersion('wire'),
    backends: agent.backends,
  }));
  app.get('/v1/report', async () => agent.report());
  app.post('/v1/actions', { schema: { body: AgentActionSchema } }, async (req) => {
    await agent.execute(req.body);
    return { ok: true };
  });
  app.post('/v1/confirm/:id', { schema: { params: ConfirmParams } }, async (req) =>
    agent.confirm(req.params.id),
  );
  app.get('/v1/confirm/:id', { schema: { params: ConfirmParams } }, async (req) =>
    agent.confirmState(req.params.id),
  );
  app.get('/v1/networks/:name/flows', { schema: { params: NetworkParams } }, async (req) =>
    agent.flows(req.params.name),
  );
  app.post('/v1/probe', { schema: { body: ProbeRequestSchema } }, async (req) => agent.probe(req.body));
  app.post(
    '/v1/vms/:name/exec',
    { schema: { params: VmParams, body: GuestExecRequestSchema } },
    async (req) => {
      await agent.vm(req.params.name);
      return agent.hypervisor.guestExec(req.params.name, req.body.argv, {
        timeoutMs: req.body.timeoutMs,
        ...(req.body.input === undefined ? {} : { input: req.body.input }),
      });
    },
  );
  app.get('/v1/vms/:name/interfaces', { schema: { params: VmParams } }, async (req) => {
    await agent.vm(req.params.name);
    return agent.hypervisor.guestInterfaces(req.params.name);
  });
  app.get(
    '/v1/vms/:name/console',
    {
      schema: {
        params: VmParams,
        querystring: z
          .object({ tail: z.coerce.number().int().min(1).max(1_000_000).default(65_536) })
          .strict(),
      },
    },
    async (req) => {
      await agent.vm(req.params.name).catch(async (e) => {
        // A stopped-and-deleted VM has no console; a stopped one still has its log.
        if ((await agent.hypervisor.config(req.params.name)) === undefined) throw e;
      });
      const logPath = agent.hypervisor.consolePath(req.params.name).replace(/console\.sock$/, 'console.log');
      const text = await readFile(logPath, 'utf8').catch(() => '');
      return { log: text.slice(-req.query.tail) };
    },
  );
  return app as unknown as FastifyInstance;
}
