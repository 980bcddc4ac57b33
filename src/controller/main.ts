import { mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SystemRunner } from '../exec/runner.js';
import { InvalidRequestError, InvalidStateError, UnavailableError } from '../shared/errors.js';
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
import { createControllerApi } from './api.js';
import { AuditLog } from './auth/audit.js';
import { TokenStore } from './auth/tokens.js';
import { Controller } from './controller.js';
import { Monitor } from './monitor.js';
import { HostCredentials } from './pki/service.js';
import { loadOrCreateSecretsKey } from './secrets/sealing.js';
import { stores } from './store/registry.js';
import { TaskManager } from './tasks.js';

/** Options of `vmlink daemon`. */
export interface DaemonOptions {
  socket: string;
  db: string;
  /** Optional TCP listener (`https://addr:port`, TLS with the controller's certificate), which requires `token`. */
  tcp?: string;
  token?: string;
  /** The CA's directory (default: `pki/` beside the database). */
  pkiDir?: string;
  /** Heartbeat period (default 5 s); a host missing 3 in a row is unreachable. */
  heartbeatMs?: number;
}

/** Runs the controller until SIGTERM/SIGINT. */
export async function runDaemon(opts: DaemonOptions): Promise<void> {
  mkdirSync(dirname(opts.socket), { recursive: true, mode: 0o755 });
  const store = stores.sqlite(opts.db);
  const tasks = new TaskManager();
  // The CA is made at the first start; from then on every call to an agent is mutual TLS.
  const credentials = await HostCredentials.open(opts.pkiDir ?? join(dirname(opts.db), 'pki'));
  // Beside the CA: the state directory's protection is what keeps both (see docs/security.md).
  const secretsKey = loadOrCreateSecretsKey(join(dirname(opts.db), 'secrets.key'));
  const controller = new Controller(store, new SystemRunner(), { credentials, secretsKey });
  const monitor = new Monitor(store, async () => (await controller.currentSpec())?.spec, {
    ...(opts.heartbeatMs ? { intervalMs: opts.heartbeatMs } : {}),
  });
  // One token store and audit trail for both listeners.
  const access = { tokens: new TokenStore(store), audit: new AuditLog(store) };
  const apps = [await createControllerApi(controller, tasks, { access })];
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
    });
    await listen(tcp, opts.tcp);
    apps.push(tcp);
  }
  log.info({ socket: opts.socket, tcp: opts.tcp, ca: credentials.pki.caFingerprint }, 'controller listening');
  monitor.start();
  const stop = () => {
    monitor.stop();
    void Promise.all(apps.map((a) => a.close()))
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
