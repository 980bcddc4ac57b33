import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { SystemRunner } from '../exec/runner.js';
import { InvalidRequestError } from '../shared/errors.js';
import { listen } from '../shared/http/server.js';
import { log } from '../shared/log.js';
import { setAgentToken } from './agents.js';
import { createControllerApi } from './api.js';
import { Controller } from './controller.js';
import { Monitor } from './monitor.js';
import { stores } from './store/registry.js';
import { TaskManager } from './tasks.js';

/** Options of `vmlink daemon`. */
export interface DaemonOptions {
  socket: string;
  db: string;
  /** Optional TCP listener (`http://addr:port`), which requires `token`. */
  tcp?: string;
  token?: string;
  /** Bearer token sent to agents outside a lab (lab agents use their lab's token). */
  agentToken?: string;
  /** Heartbeat period (default 5 s); a host missing 3 in a row is unreachable. */
  heartbeatMs?: number;
}

/** Runs the controller until SIGTERM/SIGINT. */
export async function runDaemon(opts: DaemonOptions): Promise<void> {
  mkdirSync(dirname(opts.socket), { recursive: true, mode: 0o755 });
  const store = stores.sqlite(opts.db);
  const tasks = new TaskManager();
  setAgentToken(opts.agentToken);
  const controller = new Controller(store, new SystemRunner());
  const monitor = new Monitor(store, async () => (await controller.currentSpec())?.spec, {
    ...(opts.heartbeatMs ? { intervalMs: opts.heartbeatMs } : {}),
  });
  const apps = [await createControllerApi(controller, tasks)];
  await listen(apps[0]!, `unix://${opts.socket}`);
  if (opts.tcp) {
    // The TCP API is never open without a token (an empty token file must not disable auth).
    if (!opts.token || opts.token.length < 16)
      throw new InvalidRequestError(
        'the TCP listener needs a bearer token of at least 16 characters in --token-file',
      );
    const tcp = await createControllerApi(controller, tasks, { token: opts.token });
    await listen(tcp, opts.tcp);
    apps.push(tcp);
  }
  log.info({ socket: opts.socket, tcp: opts.tcp }, 'controller listening');
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
