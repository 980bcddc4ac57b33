// The lab's cluster controllers (`lab.controllers`): `vmlink daemon --store etcd://...` processes, each in a namespace
// of its own on the lab LAN, sharing the CA and the secrets key of the controller that brought the lab up, each with
// its own database directory and API socket in the lab's run directory. Drills kill and restart them through the
// exports here.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type { Runner } from '../exec/runner.js';
import { InvalidRequestError, InvalidStateError, TimeoutError } from '../shared/errors.js';
import { AnyAnswerSchema, HttpClient } from '../shared/http/client.js';
import {
  DAEMON_STOP_GRACE_MS,
  KILL_WAIT_MS,
  LAB_CONTROLLER_START_TIMEOUT_MS,
  LAB_HEALTH_TIMEOUT_MS,
} from '../shared/limits.js';
import { labHostStateDir, labRunDir } from '../shared/paths.js';
import {
  type ExpectedProcess,
  identify,
  isRunning,
  processFromIdentityFile,
  signalProcess,
  terminate,
  waitExited,
  writeIdentityFile,
} from '../shared/process.js';
import { readJsonFile, writeFileAtomic, writeJsonFile } from '../shared/state-file.js';
import { pollUntil } from '../shared/time.js';
import type { LabSpec } from '../spec/schema.js';
import { labEtcdLocation } from './etcd.js';
import { machineNs } from './names.js';

const VMLINK_BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));

/** A cluster controller of a lab. */
export type LabController = LabSpec['controllers'][number];

/** What cluster controllers share with the controller that brought the lab up, recorded at `lab up`. */
export const LabClusterSchema = z
  .object({
    /** The CA directory (its `controller/` credentials are the controllers' etcd identity, CN vmlink-controller). */
    pkiDir: z.string().startsWith('/').max(4096),
    /** The key secrets are sealed with. */
    secretsKeyFile: z.string().startsWith('/').max(4096),
    /** The cluster's heartbeat (`cluster.heartbeatSeconds`). */
    heartbeatSeconds: z.number().int().min(1).max(60),
  })
  .strict();
/** What cluster controllers share with the lab-up controller. */
export type LabCluster = z.infer<typeof LabClusterSchema>;

/** Where `lab up` records `LabCluster` (0600), so that drills restart a controller exactly as it was started. */
const clusterFile = (lab: string): string => join(labRunDir(lab), 'cluster.json');

/** A cluster controller's API socket: `<labRunDir>/<name>.sock`. */
export const labControllerSocket = (lab: string, name: string): string =>
  join(labRunDir(lab), `${name}.sock`);

/** Every cluster controller's socket, in spec order (`VMLINK_SOCKET=a,b`). */
export const labControllerSockets = (lab: LabSpec): string[] =>
  lab.controllers.map((c) => labControllerSocket(lab.name, c.name));

/** A cluster controller's log. */
export const labControllerLog = (lab: string, name: string): string =>
  join(labRunDir(lab), `${name}.controller.log`);

/** A cluster controller's database directory (its `--db` and nothing else: the state is in etcd). */
export const labControllerDb = (lab: string, name: string): string =>
  join(labHostStateDir(lab, name), 'controller.db');

const recordOf = (lab: string, name: string) => {
  const base = join(labRunDir(lab), `${name}.controller`);
  return { identity: `${base}.json`, pidfile: `${base}.pid` };
};

/** What a recorded controller must be before the lab signals it: this vmlink's daemon, on its socket, in its namespace. */
const expected = (lab: LabSpec, name: string): ExpectedProcess => ({
  args: [VMLINK_BIN, 'daemon', labControllerSocket(lab.name, name)],
  netns: machineNs(lab.name, name),
});

function controller(lab: LabSpec, name: string): LabController {
  const c = lab.controllers.find((x) => x.name === name);
  if (!c)
    throw new InvalidRequestError(
      `lab ${lab.name} has no cluster controller ${name} (controllers: ${lab.controllers.map((x) => x.name).join(', ') || 'none'})`,
      `controller/${name}`,
    );
  return c;
}

/** The command line of cluster controller `name` (flags of `vmlink daemon`, see docs/ha.md). */
export function labControllerArgv(lab: LabSpec, name: string, cluster: LabCluster): string[] {
  return [
    process.execPath,
    VMLINK_BIN,
    '--socket',
    labControllerSocket(lab.name, name),
    'daemon',
    '--store',
    labEtcdLocation(lab),
    '--name',
    name,
    '--pki-dir',
    cluster.pkiDir,
    '--secrets-key',
    cluster.secretsKeyFile,
    '--db',
    labControllerDb(lab.name, name),
    '--heartbeat-ms',
    String(cluster.heartbeatSeconds * 1000),
  ];
}

/** Whether cluster controller `name`'s recorded process still runs. */
export async function labControllerRunning(lab: LabSpec, name: string): Promise<boolean> {
  controller(lab, name);
  return (
    (await processFromIdentityFile(recordOf(lab.name, name).identity, expected(lab, name))) !== undefined
  );
}

/** Whether the controller's socket answers `GET /v1/health` (a standby does too). */
export async function labControllerAnswers(lab: string, name: string): Promise<boolean> {
  const socket = labControllerSocket(lab, name);
  if (!existsSync(socket)) return false;
  try {
    await new HttpClient(`unix://${socket}`, { timeoutMs: LAB_HEALTH_TIMEOUT_MS }).get(
      '/v1/health',
      AnyAnswerSchema,
    );
    return true;
  } catch {
    return false;
  }
}

async function readCluster(lab: LabSpec): Promise<LabCluster> {
  const c = await readJsonFile(clusterFile(lab.name), LabClusterSchema, { maxBytes: 16 * 1024 });
  if (!c)
    throw new InvalidStateError(
      `lab ${lab.name} records no cluster controllers' settings (${clusterFile(lab.name)}): run \`vmlink lab up\` first`,
      `lab/${lab.name}`,
    );
  return c;
}

/** Starts cluster controller `name` unless it runs, and waits until its socket answers. */
async function startController(
  runner: Runner,
  lab: LabSpec,
  name: string,
  cluster: LabCluster,
): Promise<void> {
  controller(lab, name);
  if ((await labControllerRunning(lab, name)) && (await labControllerAnswers(lab.name, name))) return;
  await killLabController(lab, name);
  const socket = labControllerSocket(lab.name, name);
  rmSync(socket, { force: true });
  mkdirSync(labHostStateDir(lab.name, name), { recursive: true, mode: 0o700 });
  const pid = await runner.spawnDetached(labControllerArgv(lab, name, cluster), {
    netns: machineNs(lab.name, name),
    logFile: labControllerLog(lab.name, name),
    env: { VMLINK_LOG: process.env.VMLINK_LOG ?? 'info' },
  });
  const id = await identify(pid);
  const rec = recordOf(lab.name, name);
  if (id) {
    await writeIdentityFile(rec.identity, id);
    await writeFileAtomic(rec.pidfile, `${pid}\n`, { mode: 0o644 });
  }
  const up = await pollUntil(
    async () => {
      if (await labControllerAnswers(lab.name, name)) return 'up';
      return id && (await isRunning(id)) ? undefined : 'exited';
    },
    { timeoutMs: LAB_CONTROLLER_START_TIMEOUT_MS, intervalMs: 200 },
  );
  if (up === 'up') return;
  throw new TimeoutError(
    `cluster controller ${name} did not come up${up === 'exited' ? ' (it exited)' : ''}; see ${labControllerLog(lab.name, name)}`,
    `controller/${name}`,
  );
}

/** SIGKILLs cluster controller `name` (as a crash), only while it is still the recorded process. For drills. */
export async function killLabController(lab: LabSpec, name: string): Promise<void> {
  controller(lab, name);
  const rec = recordOf(lab.name, name);
  const id = await processFromIdentityFile(rec.identity, expected(lab, name));
  if (id && (await signalProcess(id, 'SIGKILL'))) await waitExited(id, KILL_WAIT_MS);
  if (!id || !(await isRunning(id))) {
    rmSync(rec.identity, { force: true });
    rmSync(rec.pidfile, { force: true });
  }
}

/** Starts cluster controller `name` again as `lab up` did (after `killLabController`); waits until it answers. */
export async function restartLabController(runner: Runner, lab: LabSpec, name: string): Promise<void> {
  await startController(runner, lab, name, await readCluster(lab));
}

/** The lab's cluster controllers. */
export class LabControllers {
  constructor(
    private readonly runner: Runner,
    readonly spec: LabSpec,
  ) {}

  /** Records `cluster` and starts every controller that does not answer. Idempotent. */
  async up(cluster: LabCluster, say: (m: string) => void): Promise<void> {
    const { spec } = this;
    if (spec.controllers.length === 0) return;
    mkdirSync(labRunDir(spec.name), { recursive: true, mode: 0o755 });
    await writeJsonFile(clusterFile(spec.name), LabClusterSchema.parse(cluster));
    for (const c of spec.controllers) {
      if ((await labControllerRunning(spec, c.name)) && (await labControllerAnswers(spec.name, c.name)))
        continue;
      say(`starting cluster controller ${c.name} in ${machineNs(spec.name, c.name)} (${c.address})`);
      await startController(this.runner, spec, c.name, cluster);
    }
  }

  /** Stops every cluster controller (SIGTERM, SIGKILL after the grace), each only while it is the recorded one. */
  async down(say: (m: string) => void): Promise<void> {
    for (const c of this.spec.controllers) {
      const rec = recordOf(this.spec.name, c.name);
      const id = await processFromIdentityFile(rec.identity, expected(this.spec, c.name));
      if (id) {
        say(`stopping cluster controller ${c.name}`);
        await terminate(id, { graceMs: DAEMON_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
      }
      rmSync(rec.identity, { force: true });
      rmSync(rec.pidfile, { force: true });
      rmSync(labControllerSocket(this.spec.name, c.name), { force: true });
    }
  }
}
