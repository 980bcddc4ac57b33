// The composition root: which process uses which parts. `vmlink` is the CLI (a client of the controller API);
// three of its commands turn this process into another one (the controller, a host's agent, the lab's relay),
// whose modules are loaded only then, so a plain CLI call loads no driver, agent or controller code.
import { readFileSync } from 'node:fs';
import { type Processes, runCli } from './cli/program.js';
import { InvalidRequestError } from './shared/errors.js';

/** Reads a token file; an empty one is refused (it must never turn authentication off). */
function readToken(file: string): string {
  const token = readFileSync(file, 'utf8').trim();
  if (!token) throw new InvalidRequestError(`token file ${file} is empty`);
  return token;
}

const processes: Processes = {
  async daemon(a) {
    const { runDaemon } = await import('./controller/main.js');
    await runDaemon({
      socket: a.socket,
      db: a.db,
      heartbeatMs: a.heartbeatMs,
      ...(a.listen ? { tcp: a.listen } : {}),
      ...(a.tokenFile ? { token: readToken(a.tokenFile) } : {}),
      ...(a.agentTokenFile ? { agentToken: readToken(a.agentTokenFile) } : {}),
    });
  },
  async spawnDaemon(a) {
    return (await import('./controller/main.js')).spawnDaemon(a);
  },
  async stopDaemon() {
    return (await import('./controller/main.js')).stopDaemon();
  },
  async agent(a) {
    const { runAgent } = await import('./agent/main.js');
    await runAgent(a);
  },
  async relay(listen, to) {
    const { pairRoutes, runRelay } = await import('./lab/relay.js');
    await runRelay(pairRoutes(listen, to));
  },
  async localChecks() {
    // The agent's own checks, run here: on a machine with no controller yet there is no agent to ask.
    const [{ hostPrerequisites }, { SystemRunner }] = await Promise.all([
      import('./agent/doctor.js'),
      import('./exec/runner.js'),
    ]);
    return hostPrerequisites(new SystemRunner());
  },
};

await runCli(processes);
