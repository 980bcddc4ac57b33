// The lab's long-running processes (each machine's agent, the management relay): started detached in their
// namespace and recorded by identity (pid + start time), so a later `lab up`/`down` signals exactly that process.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Runner } from '../exec/runner.js';
import { TimeoutError } from '../shared/errors.js';
import { AnyAnswerSchema, HttpClient } from '../shared/http/client.js';
import {
  AGENT_GLIBC_TUNABLES,
  DAEMON_STOP_GRACE_MS,
  KILL_WAIT_MS,
  LAB_AGENT_START_TIMEOUT_MS,
  LAB_HEALTH_TIMEOUT_MS,
  LAB_RELAY_START_TIMEOUT_MS,
} from '../shared/limits.js';
import {
  labAgentOwnSocket,
  labAgentSocket,
  labHostStateDir,
  labHostTlsDir,
  labRunDir,
} from '../shared/paths.js';
import {
  identify,
  isRunning,
  type ProcessIdentity,
  processFromIdentityFile,
  signalProcess,
  waitExited,
  writeIdentityFile,
} from '../shared/process.js';
import { readFileCappedSync, writeFileAtomic, writeFileAtomicSync } from '../shared/state-file.js';
import { pollUntil } from '../shared/time.js';
import type { LabSpec } from '../spec/schema.js';
import { ETCD_CLIENT_PORT, labEtcdSocket } from './etcd.js';
import { agentMachines, labAgentTcp, labMgmtAddress } from './layout.js';
import { machineNs, mgmtNs } from './names.js';

const VMLINK_BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));
/** What a recorded lab process (agent, relay) must be before the lab trusts or signals it: this vmlink. */
const LAB_PROCESS = { args: [VMLINK_BIN] };

/** What the processes need beyond the spec (LabOptions' part). */
export interface LabProcessOptions {
  /** Uplink NIC of each host's agent (spec `hosts[].uplink`); default eth0. */
  uplinks?: Record<string, string>;
  /** Hosts whose agents restart even when running (their credentials were renewed). */
  restartAgents?: readonly string[];
}

/** Starts, checks and kills the lab's agents and its management relay. */
export class LabProcesses {
  constructor(
    private readonly runner: Runner,
    private readonly spec: LabSpec,
    private readonly opts: LabProcessOptions = {},
  ) {}

  /** Kills machine `host`'s recorded agent, if it runs. */
  killAgent(host: string): Promise<void> {
    return this.killRecorded(this.agentRecord(host));
  }

  /** Kills the recorded management relay, if it runs. */
  killRelay(): Promise<void> {
    return this.killRecorded(this.relayRecord());
  }

  /** Records of a host's agent: `<host>.agent.json` (identity, what the lab trusts) and `<host>.agent.pid`. */
  private agentRecord(host: string): ProcessRecord {
    return processRecord(labAgentRecordBase(this.spec.name, host));
  }

  /** Records of the management relay: `relay.json` and `relay.pid`. */
  private relayRecord(): ProcessRecord {
    return processRecord(join(labRunDir(this.spec.name), 'relay'));
  }

  /** Starts the management relay (one process, one socket per host) unless it runs with these routes. */
  async ensureRelay(say: (m: string) => void): Promise<void> {
    const { spec } = this;
    const dir = labRunDir(spec.name);
    // Each agent's TLS listener, and each etcd member's client port (TLS passes through the pipe untouched).
    const pipes = [
      ...agentMachines(spec).map((h) => ({
        socket: labAgentSocket(spec.name, h.name),
        to: labAgentTcp(h.address),
      })),
      ...spec.etcd.map((m) => ({
        socket: labEtcdSocket(spec.name, m.name),
        to: `https://${m.address}:${ETCD_CLIENT_PORT}`,
      })),
    ];
    const routes = pipes.flatMap((p) => ['--listen', `unix://${p.socket}`, '--to', p.to]);
    const argsFile = join(dir, 'relay.args');
    const record = this.relayRecord();
    const same = readFileCappedSync(argsFile) === JSON.stringify(routes);
    const socketsThere = pipes.every((p) => existsSync(p.socket));
    if (same && socketsThere && (await this.recordedRunning(record))) return;
    await this.killRecorded(record);
    say(`starting the management relay in ${mgmtNs(spec.name)} (${labMgmtAddress(spec)})`);
    for (const p of pipes) rmSync(p.socket, { force: true });
    const relay = await this.spawnRecorded(
      [process.execPath, VMLINK_BIN, 'lab', 'relay', ...routes],
      mgmtNs(spec.name),
      join(dir, 'relay.log'),
      record,
    );
    writeFileAtomicSync(argsFile, JSON.stringify(routes));
    const up = await pollUntil(
      async () => {
        if (pipes.every((p) => existsSync(p.socket))) return 'up';
        return relay && (await isRunning(relay)) ? undefined : 'exited';
      },
      { timeoutMs: LAB_RELAY_START_TIMEOUT_MS, intervalMs: 100 },
    );
    if (up === 'up') return;
    throw new TimeoutError(
      `the lab's management relay did not come up; see ${join(dir, 'relay.log')}`,
      'lab',
    );
  }

  /** Starts machine `host`'s agent (listening on `address`) unless it runs and answers. */
  async ensureAgent(
    host: string,
    address: string,
    say: (m: string) => void,
    roleArgs: string[] = [],
  ): Promise<void> {
    const socket = labAgentOwnSocket(this.spec.name, host);
    const record = this.agentRecord(host);
    const restart = this.opts.restartAgents?.includes(host) ?? false;
    if (
      !restart &&
      (await this.recordedRunning(record)) &&
      (await agentAnswers(socket, LAB_HEALTH_TIMEOUT_MS))
    )
      return;
    await this.killRecorded(record);
    say(`starting the agent of ${host} in ${machineNs(this.spec.name, host)}`);
    const dir = labHostStateDir(this.spec.name, host);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const agent = await this.spawnRecorded(
      [
        process.execPath,
        VMLINK_BIN,
        'agent',
        '--host',
        host,
        '--listen',
        `unix://${socket}`,
        '--listen-tcp',
        labAgentTcp(address),
        '--tls-dir',
        labHostTlsDir(this.spec.name, host),
        '--uplink',
        this.opts.uplinks?.[host] ?? 'eth0',
        '--state-dir',
        dir,
        // Lab machines share one kernel: each reports its own processes' CPU and memory.
        '--metrics-scope',
        'processes',
        ...roleArgs,
      ],
      machineNs(this.spec.name, host),
      join(labRunDir(this.spec.name), `${host}.agent.log`),
      record,
      {
        VMLINK_LOG: process.env.VMLINK_LOG ?? 'info',
        // Backups seal 4 MiB chunks: glibc keeps their memory instead of mapping it fresh for each (limits.ts).
        GLIBC_TUNABLES: process.env.GLIBC_TUNABLES ?? AGENT_GLIBC_TUNABLES,
      },
    );
    const up = await pollUntil(
      async () => {
        if (await agentAnswers(socket, LAB_HEALTH_TIMEOUT_MS)) return 'up';
        return agent && (await isRunning(agent)) ? undefined : 'exited';
      },
      { timeoutMs: LAB_AGENT_START_TIMEOUT_MS, intervalMs: 200 },
    );
    if (up === 'up') return;
    throw new TimeoutError(
      `the agent of ${host} did not come up; see ${join(labRunDir(this.spec.name), `${host}.agent.log`)}`,
      `host/${host}`,
    );
  }

  /**
   * Starts a lab process detached in `netns` and records its identity (pid + start time), so later runs signal
   * exactly this process and never one that reused its pid; the plain pidfile is for operators' tools. Undefined
   * when it exited at once.
   */
  private async spawnRecorded(
    argv: string[],
    netns: string,
    logFile: string,
    record: ProcessRecord,
    env?: Record<string, string>,
  ): Promise<ProcessIdentity | undefined> {
    const pid = await this.runner.spawnDetached(argv, { netns, logFile, ...(env ? { env } : {}) });
    const id = await identify(pid);
    if (id) {
      await writeIdentityFile(record.identity, id);
      await writeFileAtomic(record.pidfile, `${pid}\n`, { mode: 0o644 });
    }
    return id;
  }

  /** Whether the recorded process still runs. */
  private async recordedRunning(record: ProcessRecord): Promise<boolean> {
    return (await processFromIdentityFile(record.identity, LAB_PROCESS)) !== undefined;
  }

  /** Kills the recorded process (if it is still that process) and forgets it. */
  private async killRecorded(record: ProcessRecord): Promise<void> {
    const id = await processFromIdentityFile(record.identity, LAB_PROCESS);
    if (id && (await signalProcess(id, 'SIGKILL'))) await waitExited(id, KILL_WAIT_MS);
    rmSync(record.identity, { force: true });
    rmSync(record.pidfile, { force: true });
  }
}

/** Where the lab records a machine's agent: `<base>.json` (its identity) and `<base>.pid`. */
const labAgentRecordBase = (lab: string, host: string): string => join(labRunDir(lab), `${host}.agent`);

/** The file recording the identity of lab machine `host`'s agent (pid + start time), written by `lab up`. */
export const labAgentIdentityFile = (lab: string, host: string): string =>
  `${labAgentRecordBase(lab, host)}.json`;

/** What a lab agent process must be before the lab signals it: this checkout's vmlink. */
export const LAB_AGENT_PROCESS = LAB_PROCESS;

/** Where a lab process is recorded: its identity (trusted) and a plain pidfile (for people and their tools). */
interface ProcessRecord {
  identity: string;
  pidfile: string;
}

const processRecord = (base: string): ProcessRecord => ({ identity: `${base}.json`, pidfile: `${base}.pid` });

/** SIGTERM to every process, SIGKILL to what is left after the grace; each checked by identity before a signal. */
export async function killAll(pids: number[]): Promise<void> {
  const ids = (await Promise.all(pids.map(identify))).filter((i): i is ProcessIdentity => i !== undefined);
  for (const id of ids) await signalProcess(id, 'SIGTERM');
  const exited = async () => (await Promise.all(ids.map((id) => isRunning(id)))).every((r) => !r);
  if (await pollUntil(exited, { timeoutMs: DAEMON_STOP_GRACE_MS, intervalMs: 100 })) return;
  for (const id of ids) await signalProcess(id, 'SIGKILL');
  await pollUntil(exited, { timeoutMs: KILL_WAIT_MS, intervalMs: 50 });
}

/** Whether an agent answers its health check on `socket` within `timeoutMs`. */
async function agentAnswers(socket: string, timeoutMs: number): Promise<boolean> {
  if (!existsSync(socket)) return false;
  try {
    await new HttpClient(`unix://${socket}`, { timeoutMs }).get('/v1/health', AnyAnswerSchema);
    return true;
  } catch {
    return false;
  }
}
