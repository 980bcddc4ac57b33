import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { hypervisorDrivers } from '../drivers/hypervisor/registry.js';
import { networkDrivers } from '../drivers/network/registry.js';
import { SystemRunner } from '../exec/runner.js';
import { listen } from '../shared/http/server.js';
import { log } from '../shared/log.js';
import { Agent } from './agent.js';
import { createAgentServer } from './server.js';

/** Options of `vmlink agent`. */
export interface AgentOptions {
  host: string;
  listen: string;
  stateDir: string;
  network: keyof typeof networkDrivers;
}

/** Runs an agent until SIGTERM/SIGINT; VMs and networks keep running when it exits. */
export async function runAgent(opts: AgentOptions): Promise<void> {
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o755 });
  const runner = new SystemRunner();
  const agent = new Agent({
    host: opts.host,
    runner,
    network: networkDrivers[opts.network]({ runner, stateDir: opts.stateDir }),
    hypervisor: hypervisorDrivers.qemu({ runner, stateDir: opts.stateDir }),
  });
  await agent.start();
  const app = createAgentServer(agent);
  await listen(app, opts.listen);
  log.info({ host: opts.host, listen: opts.listen, stateDir: join(opts.stateDir) }, 'agent listening');
  const stop = () => {
    void app.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
