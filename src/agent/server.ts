import type { TLSSocket } from 'node:tls';
import swagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';
import { jsonSchemaTransform, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { LeaseStatusSchema } from '../shared/cluster.js';
import {
  ErrorBodySchema,
  errorStatus,
  toErrorBody,
  UnauthorizedError,
  UnsupportedError,
} from '../shared/errors.js';
import { clientCertRefusal } from '../shared/http/auth.js';
import { createHttpApp, type ServerTls } from '../shared/http/server.js';
import { addVersionGate } from '../shared/http/version-gate.js';
import { PEER_LEASE_VERIFY_MS } from '../shared/limits.js';
import { type AgentMetrics, AgentMetricsSchema } from '../shared/metrics.js';
import { CONTROLLER_NAME, identityOf } from '../shared/tls.js';
import { localVersion, VERSION } from '../shared/version.js';
import { NAME_PATTERN } from '../spec/schema.js';
import type { Agent } from './agent.js';
import { registerBackupRoutes } from './backup/routes.js';
import type { BackupService } from './backup/service.js';
import { registerConsoleStreamRoute } from './console/routes.js';
import { registerGuestListRoute } from './guest-list.js';
import { registerMigrationRoutes } from './migrate/routes.js';
import type { MigrationService } from './migrate/service.js';
import type { CertRotation } from './tls.js';
import {
  AgentActionSchema,
  AgentBatchResultSchema,
  AgentBatchSchema,
  AgentHealthSchema,
  ConfirmStateSchema,
  CsrAnswerSchema,
  FlowsSchema,
  HostReportSchema,
  InstallCertSchema,
  OkSchema,
} from './wire.js';
import { BACKUP_PEER_ROUTES } from './wire-backup.js';
import type { DoctorObservations } from './wire-doctor.js';
import { AgentDoctorSchema, type DoctorCheck } from './wire-doctor.js';
import { MIGRATION_PEER_ROUTES } from './wire-migrate.js';
import {
  ConsoleTailSchema,
  GuestExecRequestSchema,
  GuestExecResultSchema,
  GuestInterfacesSchema,
  ProbeBatchRequestSchema,
  ProbeBatchResultSchema,
  ProbeRequestSchema,
  ProbeResultSchema,
} from './wire-probe.js';
import { DeviceInventorySchema, OpenDisksSchema, VmSnapshotsSchema } from './wire-storage.js';

const VmParams = z.object({ name: z.string().regex(NAME_PATTERN) }).strict();
const NetworkParams = VmParams;
const ConfirmParams = z.object({ id: z.string().uuid() }).strict();

/** Options of the agent's API server. */
export interface AgentServerOptions {
  /** HTTPS with these credentials, every request from a client holding the controller's certificate (TCP). */
  tls?: Omit<ServerTls, 'requestCert'>;
  /** Certificate rotation (`POST /v1/tls/csr`, `POST /v1/tls/cert`), where the agent serves TLS. */
  rotation?: CertRotation;
  /** This host's prerequisite checks (`GET /v1/doctor`), run by the process that wires the agent. */
  prerequisites: () => Promise<DoctorCheck[]>;
  /** What this host observes for the doctor's diagnoses (`GET /v1/doctor`'s `observations`; absent: none). */
  observe?: () => Promise<DoctorObservations>;
  /** The backup side (stores and jobs, agent/backup/): its routes are served when given. */
  backup?: BackupService;
  /** The live-migration side (agent/migrate/): its routes are served when given. */
  migration?: MigrationService;
  /** One metric sample of this host (`GET /v1/metrics`, agent/metrics/); the route is served when given. */
  metrics?: () => Promise<AgentMetrics>;
}

/** The one route a peer host's agent may call (read-only): its lease, for the outage check. */
export const PEER_ROUTE = '/v1/cluster/lease';

/** Whether another host's agent may call `method` on the route registered as `route` (its pattern). */
function peerRoute(method: string, url: string, route: string | undefined): boolean {
  if (method === 'GET' && url.split('?')[0] === PEER_ROUTE) return true;
  if (route !== undefined && MIGRATION_PEER_ROUTES.has(`${method} ${route}`)) return true;
  return route !== undefined && BACKUP_PEER_ROUTES.has(`${method} ${route}`);
}

/**
 * Every request over TLS comes from the controller's certificate, except `GET /v1/cluster/lease` and the backup
 * store's peer routes (wire-backup.ts), which the other hosts' agents may call too (a host certificate of the same CA;
 * the TLS handshake checked the chain). Others get 401 saying why.
 */
export function requireAgentClient(app: FastifyInstance, host: string): void {
  const what = `agent of ${host}`;
  app.addHook('onRequest', async (req, reply) => {
    const socket = req.raw.socket as TLSSocket;
    let why = clientCertRefusal(socket, { role: 'controller', name: CONTROLLER_NAME });
    if (why && peerRoute(req.method, req.url, req.routeOptions.url)) {
      const id = socket.encrypted ? identityOf(socket.getPeerCertificate()?.subject as never) : {};
      if (id.role === 'host' && id.name) why = clientCertRefusal(socket, { role: 'host', name: id.name });
    }
    if (!why) return;
    const body = toErrorBody(new UnauthorizedError(`${what} refused the client: ${why}`, what));
    await reply.status(errorStatus.unauthorized.http).send(body);
  });
}

/** Response schemas of a route: its answer, and vmlink's error body for every failure. */
const answers = <S>(ok: S) => ({ 200: ok, '4xx': ErrorBodySchema, '5xx': ErrorBodySchema });

/**
 * The agent's HTTP API (OpenAPI at /openapi.json): parse with strict schemas, then dispatch to the Agent; nothing
 * here touches the host.
 */
export async function createAgentServer(agent: Agent, opts: AgentServerOptions): Promise<FastifyInstance> {
  const base = createHttpApp(opts.tls ? { ...opts.tls, requestCert: true } : undefined);
  await base.register(swagger, {
    openapi: { info: { title: 'vmlink agent API', version: VERSION } },
    transform: jsonSchemaTransform,
  });
  const app = base.withTypeProvider<ZodTypeProvider>();
  if (opts.tls) requireAgentClient(base, agent.host);
  addVersionGate(base, 'wire', `agent of ${agent.host}`);
  app.get('/openapi.json', { schema: { hide: true } }, async () => base.swagger());
  app.get('/v1/health', { schema: { response: answers(AgentHealthSchema) } }, async () => ({
    ok: true,
    version: VERSION,
    wire: localVersion('wire'),
    backends: agent.backends,
  }));
  app.get('/v1/report', { schema: { response: answers(HostReportSchema) } }, async () => agent.report());
  // The cluster lease (docs/ha.md): the controller's view of this host, and the peers' outage check.
  // `verify=1` (peers): renew first, bounded, so that `held` means etcd answers this host now.
  app.get(
    PEER_ROUTE,
    {
      schema: {
        querystring: z.object({ verify: z.enum(['0', '1']).optional() }).strict(),
        response: answers(LeaseStatusSchema),
      },
    },
    async (req) => agent.leaseStatus(req.query.verify === '1' ? PEER_LEASE_VERIFY_MS : undefined),
  );
  // Read afresh: a device bound to vfio-pci a minute ago shows so now.
  app.get('/v1/devices', { schema: { response: answers(DeviceInventorySchema) } }, async () => {
    const inv = await agent.devices(true);
    if (!inv) throw new UnsupportedError(`the agent of ${agent.host} cannot read its devices`);
    return inv;
  });
  const metrics = opts.metrics;
  if (metrics)
    app.get('/v1/metrics', { schema: { response: answers(AgentMetricsSchema) } }, async () => metrics());
  app.get('/v1/doctor', { schema: { response: answers(AgentDoctorSchema) } }, async () => ({
    checks: await opts.prerequisites(),
    ...(opts.observe ? { observations: await opts.observe() } : {}),
  }));
  app.post(
    '/v1/actions',
    { schema: { body: AgentActionSchema, response: answers(OkSchema) } },
    async (req) => {
      await agent.execute(req.body);
      return { ok: true as const };
    },
  );
  app.post(
    '/v1/actions/batch',
    { schema: { body: AgentBatchSchema, response: answers(AgentBatchResultSchema) } },
    async (req) => ({
      results: (await agent.executeBatch(req.body.actions)).map((r) =>
        r.ok ? { ok: true as const } : { ok: false as const, error: toErrorBody(r.error).error },
      ),
    }),
  );
  app.post(
    '/v1/confirm/:id',
    { schema: { params: ConfirmParams, response: answers(ConfirmStateSchema) } },
    async (req) => agent.confirm(req.params.id),
  );
  app.get(
    '/v1/confirm/:id',
    { schema: { params: ConfirmParams, response: answers(ConfirmStateSchema) } },
    async (req) => agent.confirmState(req.params.id),
  );
  const rotation = opts.rotation;
  if (rotation) {
    app.post('/v1/tls/csr', { schema: { response: answers(CsrAnswerSchema) } }, async () => ({
      csr: await rotation.csr(),
    }));
    app.post(
      '/v1/tls/cert',
      { schema: { body: InstallCertSchema, response: answers(OkSchema) } },
      async (req) => {
        rotation.install(req.body.cert, req.body.ca);
        return { ok: true as const };
      },
    );
  }
  app.get(
    '/v1/networks/:name/flows',
    { schema: { params: NetworkParams, response: answers(FlowsSchema) } },
    async (req) => agent.flows(req.params.name),
  );
  app.post(
    '/v1/probe',
    { schema: { body: ProbeRequestSchema, response: answers(ProbeResultSchema) } },
    async (req) => agent.probe(req.body),
  );
  app.post(
    '/v1/probes',
    { schema: { body: ProbeBatchRequestSchema, response: answers(ProbeBatchResultSchema) } },
    async (req) => ({ results: await agent.probeBatch(req.body) }),
  );
  app.post(
    '/v1/vms/:name/exec',
    { schema: { params: VmParams, body: GuestExecRequestSchema, response: answers(GuestExecResultSchema) } },
    async (req) => {
      await agent.vm(req.params.name);
      return agent.hypervisor.guestExec(req.params.name, req.body.argv, {
        timeoutMs: req.body.timeoutMs,
        ...(req.body.input === undefined ? {} : { input: req.body.input }),
      });
    },
  );
  app.get(
    '/v1/vms/:name/interfaces',
    { schema: { params: VmParams, response: answers(GuestInterfacesSchema) } },
    async (req) => {
      await agent.vm(req.params.name);
      return agent.hypervisor.guestInterfaces(req.params.name);
    },
  );
  app.get(
    '/v1/vms/:name/snapshots',
    { schema: { params: VmParams, response: answers(VmSnapshotsSchema) } },
    async (req) => ({ snapshots: await agent.vmSnapshots(req.params.name) }),
  );
  app.get(
    '/v1/vms/:name/disks',
    { schema: { params: VmParams, response: answers(OpenDisksSchema) } },
    async (req) => {
      await agent.vm(req.params.name);
      const h = agent.hypervisor;
      if (!h.openDisks) throw new UnsupportedError("this host's hypervisor cannot list a VM's open disks");
      return { disks: await h.openDisks(req.params.name) };
    },
  );
  app.get(
    '/v1/vms/:name/console',
    {
      schema: {
        params: VmParams,
        querystring: z
          .object({ tail: z.coerce.number().int().min(1).max(1_000_000).default(65_536) })
          .strict(),
        response: answers(ConsoleTailSchema),
      },
    },
    async (req) => {
      await agent.vm(req.params.name).catch(async (e) => {
        // A stopped-and-deleted VM has no console; a stopped one still has its log.
        if ((await agent.hypervisor.config(req.params.name)) === undefined) throw e;
      });
      // The driver reads its log without following links, and only its tail.
      const text = await agent.hypervisor.consoleTail(req.params.name, req.query.tail * 4);
      return { log: text.slice(-req.query.tail) };
    },
  );
  if (opts.backup) await registerBackupRoutes(base, opts.backup);
  if (opts.migration) await registerMigrationRoutes(base, opts.migration);
  await registerConsoleStreamRoute(base, agent);
  registerGuestListRoute(base, agent.hypervisor);
  await base.ready();
  return base;
}
