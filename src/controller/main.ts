import { mkdirSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { SystemRunner } from '../exec/runner.js';
import { InvalidRequestError, InvalidStateError, UnavailableError } from '../shared/errors.js';
import { parseEtcdLocation } from '../shared/etcd.js';
import { listen } from '../shared/http/server.js';
import { CONTROLLER_STOP_GRACE_MS, KILL_WAIT_MS } from '../shared/limits.js';
import { log } from '../shared/log.js';
import { runDir } from '../shared/paths.js';
import {
  type ExpectedProcess,
  type FoundProcess,
  findFromIdentityFile,
  findFromPidfile,
  identify,
  terminate,
  writeIdentityFile,
} from '../shared/process.js';
import { alertService } from './alerts/service.js';
import { type ApiOptions, createControllerApi } from './api.js';
import { AuditLog } from './auth/audit.js';
import { TokenStore } from './auth/tokens.js';
import { activeOnly } from './cluster/active.js';
import { EtcdCoordination } from './cluster/etcd-coordination.js';
import { ClusterRuntime, controllerIdentity } from './cluster/runtime.js';
import type { Coordination } from './cluster/types.js';
import { Controller } from './controller.js';
import { HEARTBEAT_INTERVAL_MS, Monitor } from './monitor.js';
import { HostCredentials } from './pki/service.js';
import { loadOrCreateSecretsKey } from './secrets/sealing.js';
import { isEtcdStore } from './store/etcd.js';
import { etcdConnection, openStore, storeKind, stores } from './store/registry.js';
import type { Store } from './store/types.js';
import { TaskManager } from './tasks.js';
import { EventFeed } from './ui/events-stream.js';
import { uiListener } from './ui/listener.js';
import { UiSessions } from './ui/sessions.js';

/** Options of `vmlink daemon`. */
export interface DaemonOptions {
  socket: string;
  /** The SQLite database (with SQLite) and, in any case, the state directory (`dirname(db)`). */
  db: string;
  /** Optional TCP listener (`https://addr:port`, TLS with the controller's certificate), which requires `token`. */
  tcp?: string;
  token?: string;
  /** The CA's directory (default: `pki/` beside the database). */
  pkiDir?: string;
  /** Heartbeat period (default 5 s); a host missing 3 in a row is unreachable. */
  heartbeatMs?: number;
  /** `sqlite://PATH` (default `sqlite://<db>`) or `etcd://ADDR:PORT[,...]` (`etcd+http://`: no TLS, tests). */
  store?: string;
  /** This controller's name in the cluster (default: the hostname). */
  name?: string;
  /** The secrets sealing key (default: `secrets.key` beside the database). Cluster controllers share one. */
  secretsKey?: string;
}

/** A controller's default name: the machine's host name, as a cluster name (lowercase letters, digits, dashes). */
export function defaultControllerName(host = hostname()): string {
  const name = (host.split('.')[0] ?? '')
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+/, '')
    .slice(0, 63);
  return name || 'controller';
}

/** Where the state lives: a SQLite file (one controller) or etcd (a cluster, with its coordination). */
interface OpenedState {
  store: Store;
  coordination?: Coordination;
}

/**
 * Opens the store at `location`. etcd: the controller's certificate from the pki directory is its etcd identity
 * (CN vmlink-controller) over TLS (`etcd+http://`: none, tests); one client serves the store and the coordination.
 */
function openState(location: string, credentials: HostCredentials, heartbeatMs?: number): OpenedState {
  if (storeKind(location) === 'sqlite') return { store: openStore(location) };
  const tls = parseEtcdLocation(location).tls ? credentials.own : undefined;
  const connection = etcdConnection(location, tls ? { tls } : {});
  const store = stores.etcd(location, tls ? { tls } : {});
  const coordination = new EtcdCoordination(store.client, {
    connection,
    ...(heartbeatMs ? { heartbeatSeconds: Math.max(1, Math.round(heartbeatMs / 1000)) } : {}),
  });
  return { store, coordination };
}

/** Runs the controller until SIGTERM/SIGINT. */
export async function runDaemon(opts: DaemonOptions): Promise<void> {
  mkdirSync(dirname(opts.socket), { recursive: true, mode: 0o755 });
  const stateDir = dirname(opts.db);
  // The CA is made at the first start; from then on every call to an agent is mutual TLS. Cluster controllers
  // share one pki directory (its controller certificate is their etcd identity too).
  const credentials = await HostCredentials.open(opts.pkiDir ?? join(stateDir, 'pki'));
  const { store, coordination } = openState(
    opts.store ?? `sqlite://${opts.db}`,
    credentials,
    opts.heartbeatMs,
  );
  const tasks = new TaskManager();
  const runtime = new ClusterRuntime({
    self: controllerIdentity(opts.name ?? defaultControllerName(), `unix://${opts.socket}`, opts.tcp),
    ...(coordination ? { coordination } : {}),
    tasks,
  });
  // Beside the CA: the state directory's protection is what keeps both (see docs/security.md).
  const secretsKey = loadOrCreateSecretsKey(opts.secretsKey ?? join(stateDir, 'secrets.key'));
  // What acts writes only while this controller is the active one; tokens and the audit trail are written by any
  // (a standby's refusals are audited too).
  const acting = activeOnly(store, () => runtime.assertActive());
  // In a cluster: leases (failed hosts skipped, the HA manager), and etcd's users and membership written at apply.
  const controller = new Controller(acting, new SystemRunner(), {
    credentials,
    secretsKey,
    ...(coordination ? { coordination } : {}),
    ...(isEtcdStore(store) ? { etcd: store } : {}),
    // Plain-HTTP etcd (tests) has no client certificates to map to users: enabling its auth would lock every client out.
    etcdAuth: !(opts.store ?? '').startsWith('etcd+http://'),
  });
  const monitor = new Monitor(acting, async () => (await controller.currentSpec())?.spec, {
    ...(opts.heartbeatMs ? { intervalMs: opts.heartbeatMs } : {}),
  });
  runtime.addActiveService({
    name: 'heartbeat monitor',
    start: () => monitor.start(),
    stop: async () => monitor.stop(),
  });
  // `status` and `vm list` from each host's kept report, refreshed once a heartbeat period; a standby controller
  // does not run it and asks the agents live (docs/fleet-sim.md).
  runtime.addActiveService({
    name: 'report cache',
    start: () => controller.reports.start(opts.heartbeatMs ?? HEARTBEAT_INTERVAL_MS),
    stop: async () => controller.reports.stop(),
  });
  // The agents' samples for GET /v1/metrics, alerts and the doctor: collected by the active controller only.
  runtime.addActiveService({
    name: 'metrics collector',
    start: () => controller.metrics.start(),
    stop: () => controller.metrics.stop(),
  });
  // Automatic balancing (`cluster.balance: automatic`): the active controller's rounds only.
  runtime.addActiveService({
    name: 'balancer',
    start: () => controller.balance.start(),
    stop: async () => controller.balance.stop(),
  });
  // Alert rules after each collection, on the active controller; their counts are the vmlink_alerts gauge.
  runtime.addActiveService(
    alertService(controller.alerts, controller.metrics, (rows) => controller.metrics.series.setAlerts(rows)),
  );
  const haManager = controller.haManager();
  if (haManager) runtime.addActiveService(haManager);
  // Backup schedules, restore tests and objectives: on the active controller only (every controller with SQLite).
  runtime.addActiveService(controller.backupManager());
  // One token store and audit trail for both listeners.
  const access = { tokens: new TokenStore(store), audit: new AuditLog(store) };
  // The doctor's memory trends and clock offsets read the collector's history.
  const metrics = controller.metrics;
  // The web console: one set of browser sessions and one event poller for every listener.
  const apps: FastifyInstance[] = [];
  const ui: NonNullable<ApiOptions['ui']> = {
    sessions: new UiSessions(),
    feed: new EventFeed((n) => controller.events(n)),
  };
  ui.ensureListener = uiListener({
    existing: opts.tcp,
    ca: { path: join(credentials.pki.dir, 'ca.pem'), fingerprint: credentials.pki.caFingerprint },
    start: async (address) => {
      const app = await createControllerApi(controller, tasks, {
        tls: credentials.own,
        access,
        cluster: runtime,
        metrics,
        ui,
      });
      await listen(app, address);
      apps.push(app);
      log.info({ address: app.server.address() }, 'web console listener started');
      return app;
    },
  });
  apps.push(await createControllerApi(controller, tasks, { access, cluster: runtime, metrics, ui }));
  await listen(apps[0]!, `unix://${opts.socket}`);
  if (opts.tcp) {
    // The TCP API is never open without a token (an empty token file must not disable auth).
    if (!opts.token || opts.token.length < 16)
      throw new InvalidRequestError(
        'the TCP listener needs a bearer token of at least 16 characters in --token-file',
      );
    // The user's token travels only inside TLS.
    if (!opts.tcp.startsWith('https://'))
      throw new InvalidRequestError(
        `--listen must be https://ADDR:PORT (the TCP API speaks only TLS), got ${opts.tcp}`,
      );
    const tcp = await createControllerApi(controller, tasks, {
      token: opts.token,
      tls: credentials.own,
      access,
      cluster: runtime,
      metrics,
      ui,
    });
    await listen(tcp, opts.tcp);
    apps.push(tcp);
  }
  log.info(
    {
      socket: opts.socket,
      tcp: opts.tcp,
      ca: credentials.pki.caFingerprint,
      store: runtime.storeKind,
      controller: runtime.self.id,
    },
    'controller listening',
  );
  // Active at once with SQLite; with etcd a candidate from now on (standby until elected).
  runtime.start();
  const stop = () => {
    // Resign first: a standby takes over at once instead of after the election lease.
    void runtime
      .close()
      .catch((e: unknown) => log.warn({ err: (e as Error).message }, 'leaving the cluster failed'))
      .then(() => Promise.all(apps.map((a) => a.close())))
      .then(() => store.close())
      .then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/** How `vmlink daemon --detach` starts the controller: the CLI's own daemon command, in the background. */
export interface DetachedDaemon {
  socket: string;
  db: string;
  heartbeatMs: number;
  listen?: string;
  tokenFile?: string;
  store?: string;
  name?: string;
  pkiDir?: string;
  secretsKey?: string;
}

// The detached controller's identity (pid and start time), so `--stop` never signals a process that merely
// inherited its pid. `controller.pid` (a bare pid) is what older versions wrote.
const identityFile = () => `${runDir()}/controller.json`;
const legacyPidFile = () => `${runDir()}/controller.pid`;
const VMLINK_BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));
/** What a detached controller is: this vmlink's `bin/vmlink.js ... daemon`. */
const CONTROLLER: ExpectedProcess = { args: [VMLINK_BIN, 'daemon'] };

/** Starts `vmlink daemon` detached, logging to the run directory, and records its pid; returns both. */
export async function spawnDaemon(o: DetachedDaemon): Promise<{ pid: number; logFile: string }> {
  mkdirSync(runDir(), { recursive: true });
  const args = [VMLINK_BIN, '--socket', o.socket, 'daemon', '--db', o.db];
  if (o.listen) args.push('--listen', o.listen);
  if (o.tokenFile) args.push('--token-file', o.tokenFile);
  args.push('--heartbeat-ms', String(o.heartbeatMs));
  if (o.store) args.push('--store', o.store);
  if (o.name) args.push('--name', o.name);
  if (o.pkiDir) args.push('--pki-dir', o.pkiDir);
  if (o.secretsKey) args.push('--secrets-key', o.secretsKey);
  const logFile = `${runDir()}/controller.log`;
  const pid = await new SystemRunner().spawnDetached([process.execPath, ...args], { logFile });
  const id = await identify(pid);
  if (!id)
    throw new UnavailableError(`the controller (pid ${pid}) exited at once; see ${logFile}`, 'controller');
  await writeIdentityFile(identityFile(), id);
  return { pid, logFile };
}

/**
 * Stops a controller started with `--detach` (SIGTERM, then SIGKILL after 10 s); VMs and the lab keep running.
 * Refuses (and signals nothing) when its record names a live process that is not this vmlink's controller.
 */
export async function stopDaemon(): Promise<string> {
  const found =
    (await findFromIdentityFile(identityFile(), CONTROLLER)) ??
    (await findFromPidfile(legacyPidFile(), CONTROLLER));
  if (found && !found.expected) throw notOurs(found);
  const target = found?.id;
  const outcome = target
    ? await terminate(target, { graceMs: CONTROLLER_STOP_GRACE_MS, killMs: KILL_WAIT_MS })
    : 'not-running';
  if (outcome === 'survived')
    throw new InvalidStateError(`controller (pid ${target!.pid}) survived SIGKILL`, 'controller');
  rmSync(identityFile(), { force: true });
  rmSync(legacyPidFile(), { force: true });
  return outcome === 'not-running' ? 'controller not running' : `controller stopped (pid ${target!.pid})`;
}

function notOurs(p: FoundProcess): InvalidStateError {
  return new InvalidStateError(
    `the controller's record in ${runDir()} names pid ${p.id.pid} (${p.comm}), which is not a vmlink controller: nothing was signalled; if no controller runs, remove ${identityFile()} and ${legacyPidFile()}`,
    'controller',
  );
}
