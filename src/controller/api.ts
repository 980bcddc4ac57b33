import swagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';
import { jsonSchemaTransform, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { createHttpApp, type ServerTls } from '../shared/http/server.js';
import { addVersionGate } from '../shared/http/version-gate.js';
import { CaAnswerSchema, JoinAnswerSchema, JoinBodySchema } from '../shared/join-wire.js';
import type { MetricsSource } from '../shared/metrics.js';
import { localVersion, VERSION } from '../shared/version.js';
import { addAlertRoutes } from './alerts/routes.js';
import { accepted, answers } from './api-answers.js';
import { installAccessControl, principalOf } from './auth/access.js';
import { AuditLog } from './auth/audit.js';
import { addAccessRoutes } from './auth/routes.js';
import { TokenStore } from './auth/tokens.js';
import { addBackupRoutes } from './backup/routes.js';
import { addBalanceRoutes } from './balance/routes.js';
import { installStandbyGate } from './cluster/active.js';
import { addClusterRoutes } from './cluster/routes.js';
import { type ClusterRuntime, standaloneRuntime } from './cluster/runtime.js';
import { assertIdle, type Controller } from './controller.js';
import { gatherDoctor } from './doctor.js';
import { addDrillRoutes } from './drills/routes.js';
import { addHaRoutes } from './ha/routes.js';
import { addMetricsRoutes } from './metrics/routes.js';
import { addMigrationRoutes } from './migrate/routes.js';
import { hostHealth } from './monitor.js';
import { addMoveDiskRoutes } from './move-disk-routes.js';
import { addSecretRoutes } from './secrets/routes.js';
import { addStorageRoutes } from './storage-routes.js';
import type { TaskContext, TaskManager } from './tasks.js';
import { EventFeed } from './ui/events-stream.js';
import { addUiRoutes, type EnsureUiListener } from './ui/routes.js';
import { UiSessions } from './ui/sessions.js';
import { ThroughputRequestSchema } from './verify.js';
import { addVerifyLastRoute } from './verify-last.js';
import {
  ApplyBodySchema,
  ConsoleTailSchema,
  DestroyBodySchema,
  DoctorReportSchema,
  EventsSchema,
  GuestExecResultSchema,
  HealthSchema,
  JoinTokenBodySchema,
  JoinTokenSchema,
  NetworkListSchema,
  NetworkViewSchema,
  OkSchema,
  PlanResultSchema,
  RotatedSchema,
  SecurityGroupListSchema,
  SpecBodySchema,
  StatusSchema,
  TaskParamsSchema,
  TaskQuerySchema,
  TaskViewSchema,
  VmExecBodySchema,
  VmListSchema,
  VmParamsSchema,
  VmStopBodySchema,
} from './wire.js';
import { HostDevicesListSchema } from './wire-devices.js';
import { LbListSchema } from './wire-lb.js';

// Storage tasks (copies, imports, VM snapshots) change hosts too: one at a time, and never during an apply; a drill
// (kills and restores lab processes) never runs beside a lab up/down or another drill.
const MUTATING = ['apply', 'destroy', 'lab.up', 'lab.down', 'storage', 'drill', 'migrate'] as const;
// Backup tasks (runs, verify, sync, prune, restores) change no host's configuration: they run beside applies, one per
// VM at a time (backup/deps.ts VmLocks).

/** `?live=true`: ask every agent now instead of serving the controller's kept reports (`status`, `vm list`). */
const LiveQuerySchema = z.object({ live: z.enum(['true', 'false']).default('false') }).strict();
/** `status`: `full=true` answers each host's whole report (default: its summary, `summaryReport` in views.ts). */
const StatusQuerySchema = LiveQuerySchema.extend({
  full: z
    .enum(['true', 'false'])
    .default('false')
    .describe(
      "each host's whole report; without it, a summary: VMs, networks and security groups without their config, ports, CPU placement, leases; no devices",
    ),
}).strict();

/**
 * The answer as JSON without zod's pass over it: for answers the controller builds itself from parts already checked
 * (agents' reports parsed with their schemas, the validated spec). Re-checking `status` and `vm list` (23 MB with
 * whole reports and 5 MB at 1,000 hosts) was 12 % of the controller's CPU while they were asked at 300 hosts, in one
 * synchronous block per answer. The route's schema still documents the answer (OpenAPI); views-cache.test.ts holds
 * the answers to it.
 */
const builtAnswer = { serializerCompiler: () => (data: unknown) => JSON.stringify(data) };

/** Options of the API server. */
export interface ApiOptions {
  /**
   * When set, this is a TCP listener: every request must carry a bearer token (this bootstrap token, an admin, or an
   * API token), but the open routes of the role table (the CA, a join). Without it, the root-only unix socket.
   */
  token?: string;
  /** Serve HTTPS with the controller's certificate (TCP listeners). */
  tls?: ServerTls;
  /** API tokens and audit trail, shared by the listeners (default: on the controller's store). */
  access?: { tokens: TokenStore; audit: AuditLog };
  /** Active or standby (cluster/runtime.ts); default: the only controller, always active. */
  cluster?: ClusterRuntime;
  /** The metric collector's history, which the doctor's diagnoses read (absent: no metrics collected). */
  metrics?: MetricsSource;
  /** The web console: browser sessions and the live event feed, shared by the listeners; the localhost listener. */
  ui?: { sessions: UiSessions; feed: EventFeed; ensureListener?: EnsureUiListener; webDir?: string };
}

/** The controller's REST API (OpenAPI at /openapi.json): parse with strict schemas, then dispatch to the Controller. */
export async function createControllerApi(
  controller: Controller,
  tasks: TaskManager,
  opts: ApiOptions = {},
): Promise<FastifyInstance> {
  const base = createHttpApp(opts.tls);
  await base.register(swagger, {
    openapi: { info: { title: 'vmlink controller API', version: VERSION } },
    transform: jsonSchemaTransform,
  });
  const app = base.withTypeProvider<ZodTypeProvider>();
  const { tokens, audit } = opts.access ?? {
    tokens: new TokenStore(controller.store),
    audit: new AuditLog(controller.store),
  };
  const ui = opts.ui ?? {
    sessions: new UiSessions(),
    feed: new EventFeed((n) => controller.events(n)),
  };
  // A TCP listener without a bootstrap token (the one `vmlink ui` starts) is TCP all the same: tokens or sessions.
  const listener = opts.token || opts.tls ? 'tcp' : 'unix-socket';
  installAccessControl(base, {
    listener,
    bootstrapToken: opts.token,
    sessions: ui.sessions,
    tokens,
    audit,
    context: {
      spec: async () => (await controller.currentSpec())?.spec,
      taskKind: (id) => tasks.kind(id),
    },
    taskEnded: (id) => tasks.ended(id),
  });
  addVersionGate(base, 'api');
  // After access control: a standby names the active controller to authenticated callers only.
  const cluster = opts.cluster ?? standaloneRuntime(tasks);
  installStandbyGate(base, cluster, listener);
  const startTask = (
    kind: (typeof MUTATING)[number] | 'verify' | 'backup',
    body: (ctx: TaskContext) => Promise<unknown>,
  ) => {
    if ((MUTATING as readonly string[]).includes(kind)) assertIdle(tasks.running(MUTATING));
    return { taskId: tasks.start(kind, body) };
  };

  app.get('/openapi.json', { schema: { hide: true } }, async () => base.swagger());
  app.get('/v1/health', { schema: { summary: 'Liveness', response: answers(HealthSchema) } }, async () => ({
    ok: true as const,
    version: VERSION,
    api: localVersion('api'),
  }));
  app.get(
    '/v1/doctor',
    {
      schema: {
        summary:
          "The controller's own checks, each host's prerequisite checks as its agent reports them, and the diagnoses",
        querystring: z
          .object({
            host: z
              .string()
              .regex(/^[a-z][a-z0-9-]{0,30}$/)
              .optional(),
          })
          .strict(),
        response: answers(DoctorReportSchema),
      },
    },
    async (req) =>
      gatherDoctor((await controller.currentSpec())?.spec, undefined, await controller.events(200), {
        ...(req.query.host ? { host: req.query.host } : {}),
        health: await hostHealth(controller.store),
        ...(opts.metrics ? { metrics: opts.metrics } : {}),
      }),
  );

  app.post(
    '/v1/plan',
    {
      schema: {
        summary: 'Validate a spec and show what apply would change',
        body: SpecBodySchema,
        response: answers(PlanResultSchema),
      },
    },
    async (req) => {
      const r = await controller.plan(req.body.spec, req.body.source);
      // Steps are interfaces; the contract checks their common fields and carries the rest as they are.
      return { ...r, plan: { ...r.plan, steps: r.plan.steps.map((step) => ({ ...step })) } };
    },
  );
  app.post(
    '/v1/apply',
    { schema: { summary: 'Apply a spec (task)', body: ApplyBodySchema, response: accepted } },
    async (req, reply) => {
      const { spec, source, allowDestroy } = req.body;
      // Validate synchronously so a bad spec fails the request itself (422), not a task.
      controller.validate(spec, source);
      return reply
        .status(202)
        .send(startTask('apply', (ctx) => controller.apply(spec, source, ctx, { allowDestroy })));
    },
  );
  app.post(
    '/v1/destroy',
    {
      schema: {
        summary: 'Remove the VMs and networks of a spec (task)',
        body: DestroyBodySchema,
        response: accepted,
      },
    },
    async (req, reply) =>
      reply
        .status(202)
        .send(startTask('destroy', (ctx) => controller.destroy(req.body.spec, req.body.source, ctx))),
  );
  app.post(
    '/v1/verify',
    { schema: { summary: 'Measure the connectivity matrix (task)', response: accepted } },
    async (_req, reply) => reply.status(202).send(startTask('verify', (ctx) => controller.verify(ctx))),
  );
  app.post(
    '/v1/verify/throughput',
    {
      schema: {
        summary: 'Measure TCP throughput between two endpoints with iperf3 (task)',
        body: ThroughputRequestSchema,
        response: accepted,
      },
    },
    async (req, reply) =>
      reply.status(202).send(startTask('verify', (ctx) => controller.throughput(req.body, ctx))),
  );
  app.post(
    '/v1/lab/up',
    {
      schema: {
        summary: "Build the spec's lab and start its agents (task)",
        body: SpecBodySchema,
        response: accepted,
      },
    },
    async (req, reply) =>
      reply
        .status(202)
        .send(startTask('lab.up', (ctx) => controller.labUp(req.body.spec, req.body.source, ctx))),
  );
  app.post(
    '/v1/lab/down',
    {
      schema: {
        summary: "Remove the spec's lab and all it holds (task)",
        body: SpecBodySchema,
        response: accepted,
      },
    },
    async (req, reply) =>
      reply
        .status(202)
        .send(startTask('lab.down', (ctx) => controller.labDown(req.body.spec, req.body.source, ctx))),
  );

  app.post(
    '/v1/hosts/:name/join-token',
    {
      schema: {
        summary: "A one-time, expiring token for a host's agent to join (only its hash is kept)",
        params: VmParamsSchema,
        body: JoinTokenBodySchema,
        response: answers(JoinTokenSchema),
      },
    },
    async (req) => controller.joinToken(req.params.name, req.body.ttlSeconds * 1000),
  );
  app.post(
    '/v1/hosts/:name/rotate-cert',
    {
      schema: {
        summary: "Rotate a host's certificate through its agent (new key there; the old serial is revoked)",
        params: VmParamsSchema,
        response: answers(RotatedSchema),
      },
    },
    async (req) => controller.rotateCert(req.params.name),
  );
  app.get(
    '/v1/devices',
    {
      schema: {
        summary: "Every host's PCI and USB devices, as its agent reads them now",
        response: answers(HostDevicesListSchema),
      },
    },
    async () => controller.hostDevices(),
  );
  app.get(
    '/v1/hosts/:name/devices',
    {
      schema: {
        summary: "A host's PCI and USB devices, as its agent reads them now",
        params: VmParamsSchema,
        response: answers(HostDevicesListSchema),
      },
    },
    async (req) => controller.hostDevices(req.params.name),
  );
  app.get(
    '/v1/pki/ca',
    { schema: { summary: 'The CA certificate and its fingerprint', response: answers(CaAnswerSchema) } },
    async () => controller.ca(),
  );
  app.post(
    '/v1/join',
    {
      schema: {
        summary: 'A host spends its join token on a certificate for the key of its CSR',
        body: JoinBodySchema,
        response: answers(JoinAnswerSchema),
      },
    },
    async (req) => controller.join(req.body.host, req.body.token, req.body.csr),
  );

  app.get(
    '/v1/tasks/:id',
    {
      schema: {
        summary: 'A task with its progress',
        params: TaskParamsSchema,
        querystring: TaskQuerySchema,
        response: answers(TaskViewSchema),
      },
    },
    async (req) => tasks.get(req.params.id, req.query.since),
  );
  app.delete(
    '/v1/tasks/:id',
    { schema: { summary: 'Cancel a task', params: TaskParamsSchema, response: answers(TaskViewSchema) } },
    async (req) => tasks.cancel(req.params.id),
  );

  app.get(
    '/v1/status',
    {
      ...builtAnswer,
      schema: {
        summary:
          "Hosts and their reports (the controller's kept copies with their age; live=true asks every agent; full=true: whole reports)",
        querystring: StatusQuerySchema,
        response: answers(StatusSchema),
      },
    },
    async (req) => controller.status({ live: req.query.live === 'true', summary: req.query.full !== 'true' }),
  );
  app.get(
    '/v1/events',
    {
      schema: {
        summary: 'Recent events',
        querystring: z.object({ limit: z.coerce.number().int().min(1).max(1000).default(50) }).strict(),
        response: answers(EventsSchema),
      },
    },
    async (req) => controller.events(req.query.limit),
  );
  app.get(
    '/v1/networks',
    { schema: { summary: 'Networks of the applied spec', response: answers(NetworkListSchema) } },
    async () => controller.networks(),
  );
  app.get(
    '/v1/security-groups',
    {
      schema: {
        summary: 'Security groups of the applied spec, with their state on each host',
        response: answers(SecurityGroupListSchema),
      },
    },
    async () => controller.securityGroups(),
  );
  app.get(
    '/v1/networks/:name',
    {
      schema: {
        summary: 'A network, as each member host observes it (flows=true adds its OpenFlow rules)',
        params: VmParamsSchema,
        querystring: z.object({ flows: z.enum(['true', 'false']).default('false') }).strict(),
        response: answers(NetworkViewSchema),
      },
    },
    async (req) => controller.networkShow(req.params.name, req.query.flows === 'true'),
  );
  app.get(
    '/v1/load-balancers',
    {
      schema: {
        summary: 'Load balancers: VIP holder, backends UP/DOWN, HAProxy and Keepalived per host',
        response: answers(LbListSchema),
      },
    },
    async () => controller.loadBalancers(),
  );
  app.get(
    '/v1/vms',
    {
      ...builtAnswer,
      schema: {
        summary: 'VMs: desired and observed (from kept host reports; live=true asks every agent)',
        querystring: LiveQuerySchema,
        response: answers(VmListSchema),
      },
    },
    async (req) => controller.vms({ live: req.query.live === 'true' }),
  );
  app.post(
    '/v1/vms/:name/start',
    { schema: { summary: 'Start a VM', params: VmParamsSchema, response: answers(OkSchema) } },
    async (req) => {
      await controller.vmPower(req.params.name, 'start', false, principalOf(req)?.who);
      return { ok: true as const };
    },
  );
  app.post(
    '/v1/vms/:name/stop',
    {
      schema: {
        summary: 'Stop a VM',
        params: VmParamsSchema,
        body: VmStopBodySchema,
        response: answers(OkSchema),
      },
    },
    async (req) => {
      await controller.vmPower(req.params.name, 'stop', req.body.force, principalOf(req)?.who);
      return { ok: true as const };
    },
  );
  app.post(
    '/v1/vms/:name/exec',
    {
      schema: {
        summary: 'Run a command in a guest',
        params: VmParamsSchema,
        body: VmExecBodySchema,
        response: answers(GuestExecResultSchema),
      },
    },
    async (req) => controller.vmExec(req.params.name, req.body.argv, req.body.timeoutMs, req.body.input),
  );
  app.get(
    '/v1/vms/:name/console',
    {
      schema: {
        summary: "Tail of a VM's serial console",
        params: VmParamsSchema,
        querystring: z
          .object({ tail: z.coerce.number().int().min(1).max(1_000_000).default(65_536) })
          .strict(),
        response: answers(ConsoleTailSchema),
      },
    },
    async (req) => controller.vmConsole(req.params.name, req.query.tail),
  );
  addClusterRoutes(base, cluster);
  addAccessRoutes(base, tokens, audit, (name) => ui.sessions.endAllOf(name));
  addSecretRoutes(base, controller);
  addHaRoutes(base, controller);
  addBalanceRoutes(base, controller.balance);
  addDrillRoutes(base, { drills: controller.drills, startTask: (body) => startTask('drill', body) });
  addStorageRoutes(base, {
    storage: controller.storage,
    startTask: (body) => startTask('storage', body),
    assertIdle: () => assertIdle(tasks.running(MUTATING)),
  });
  addBackupRoutes(base, { backups: controller.backups, startTask: (body) => startTask('backup', body) });
  addMigrationRoutes(base, { deps: controller.migration, startTask: (body) => startTask('migrate', body) });
  addMoveDiskRoutes(base, {
    deps: { ...controller.migration, event: (kind, message) => controller.store.appendEvent(kind, message) },
    startTask: (body) => startTask('storage', body),
  });
  addMetricsRoutes(base, controller.metrics);
  await addUiRoutes(base, {
    ...ui,
    audit,
    listener,
    placement: (vm) => controller.vmPlacement(vm),
  });
  addAlertRoutes(base, controller.alerts);
  addVerifyLastRoute(base, controller.lastVerify);
  // A `scale` action resizes like `vmlink volume resize`: never beside an apply or another host change.
  controller.alerts.guard(() => assertIdle(tasks.running(MUTATING)));
  await base.ready();
  return base;
}
