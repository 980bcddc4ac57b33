// The composition root: which process uses which parts. `vmlink` is the CLI (a client of the controller API);
// three of its commands turn this process into another one (the controller, a host's agent, the lab's relay),
// whose modules are loaded only then, so a plain CLI call loads no driver, agent or controller code.
// `vmlink --version` is answered before even the command tree loads (commander and the API's zod schemas take
// ~90 ms of a ~170 ms start here; scripts call it in loops).
import { readFileSync } from 'node:fs';
import type { Processes } from './cli/program.js';
import { VERSION } from './shared/package-version.js';

/** Reads a token file; an empty one is refused (it must never turn authentication off). */
async function readToken(file: string): Promise<string> {
  const token = readFileSync(file, 'utf8').trim();
  if (!token) {
    const { InvalidRequestError } = await import('./shared/errors.js');
    throw new InvalidRequestError(`token file ${file} is empty`);
  }
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
      ...(a.tokenFile ? { token: await readToken(a.tokenFile) } : {}),
      ...(a.store ? { store: a.store } : {}),
      ...(a.name ? { name: a.name } : {}),
      ...(a.pkiDir ? { pkiDir: a.pkiDir } : {}),
      ...(a.secretsKey ? { secretsKey: a.secretsKey } : {}),
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

/** Whether the command line asks only for the version (commander's `-V, --version`). */
const versionOnly = (args: string[]): boolean =>
  args.length === 1 && (args[0] === '--version' || args[0] === '-V');

if (versionOnly(process.argv.slice(2))) process.stdout.write(`${VERSION}\n`);
else await (await import('./cli/program.js')).runCli(processes);
