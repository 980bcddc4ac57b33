// How the backup side of the controller reaches agents: the typed backup calls of a host's agent (controller/agents.ts
// adds them to AgentClient), where agents reach a store (the location sent with a job), whether a host may be asked at
// all (its heartbeat state, its lease in a cluster), and the polling of an agent's long job into a task's progress.
import type {
  BackupRunRequest,
  FileRestoreRequest,
  PullRequest,
  RestoreRequest,
  StoreEnsureRequest,
  VerifyRequest,
} from '../../agent/wire-backup.js';
import {
  BACKUP_JOB_POLL_MS,
  BACKUP_JOB_TIMEOUT_MS,
  type BackupJob,
  type BackupStoreStatus,
  type GcResult,
  type Manifest,
  type SnapshotId,
  type SnapshotSummary,
  type StoreLocation,
} from '../../shared/backup.js';
import {
  type ErrorKind,
  ErrorKinds,
  InvalidSpecError,
  InvalidStateError,
  NotFoundError,
  TimeoutError,
  UnavailableError,
  VmlinkError,
} from '../../shared/errors.js';
import { AGENT_TCP_PORT } from '../../shared/paths.js';
import type { Spec } from '../../spec/schema.js';
import type { BackupStoreSpec } from '../../spec/schema-backup.js';
import { hostAddress } from '../../spec/topology.js';
import type { AgentFactory, AgentPort } from '../hosts.js';
import { type HostHealth, hostHealth } from '../monitor.js';
import type { Store } from '../store/types.js';

/** What the controller asks of a host's agent about backups (the agent's wire-backup.ts routes). */
export interface BackupAgent {
  backupStoreEnsure(store: StoreEnsureRequest['store']): Promise<BackupStoreStatus>;
  backupStores(): Promise<BackupStoreStatus[]>;
  snapshots(store: string, vm?: string): Promise<SnapshotSummary[]>;
  manifest(store: string, id: SnapshotId): Promise<Manifest>;
  prune(store: string, snapshots: SnapshotId[]): Promise<SnapshotId[]>;
  gc(store: string, graceMs?: number): Promise<GcResult>;
  verify(store: string, req: VerifyRequest): Promise<BackupJob>;
  pull(store: string, req: PullRequest): Promise<BackupJob>;
  startBackup(req: BackupRunRequest): Promise<BackupJob>;
  startRestore(req: RestoreRequest): Promise<BackupJob>;
  startFileRestore(req: FileRestoreRequest): Promise<BackupJob>;
  job(id: string): Promise<BackupJob>;
}

export const BACKUP_METHODS = [
  'backupStoreEnsure',
  'backupStores',
  'snapshots',
  'manifest',
  'prune',
  'gc',
  'verify',
  'pull',
  'startBackup',
  'startRestore',
  'startFileRestore',
  'job',
] as const satisfies ReadonlyArray<keyof BackupAgent>;

/** `host`'s agent with its backup calls; refused (naming the host) when its client has none (an older agent). */
export function backupAgent(agents: AgentFactory, spec: Spec, host: string): BackupAgent & AgentPort {
  const a = agents(spec, host) as AgentPort & Partial<BackupAgent>;
  const missing = BACKUP_METHODS.filter((m) => typeof a[m] !== 'function');
  if (missing.length)
    throw new InvalidStateError(
      `the agent client of ${host} cannot do backups (no ${missing.join(', ')})`,
      `host/${host}`,
    );
  return a as AgentPort & BackupAgent;
}

/** The spec's store `name`, or an error naming the stores there are. */
export function storeSpec(spec: Spec, name: string): BackupStoreSpec {
  const s = spec.backupStores.find((x) => x.name === name);
  if (!s)
    throw new NotFoundError(
      'backup store',
      `${name} (the applied spec has ${spec.backupStores.length ? spec.backupStores.map((x) => x.name).join(', ') : 'none'})`,
    );
  return s;
}

/** What the store's host agent is asked to realise (`ensure`): its directory defaults to the agent's choice. */
export function storeConfig(s: BackupStoreSpec): StoreEnsureRequest['store'] {
  // No path in the spec: the agent picks `<its state dir>/backup-stores/<name>`.
  return { name: s.name, offsite: s.offsite, ...(s.path ? { path: s.path } : {}) };
}

/**
 * Where other agents reach store `name`: its host's agent over mutual TLS with host certificates. That is the spec's
 * `https://` agent address, else the host's underlay address (the lab LAN address) on the agent's TCP port, the
 * same rule as the cluster membership (ha/members.ts): never the controller's lab relay, which only it can use.
 */
export function storeLocation(spec: Spec, name: string): StoreLocation {
  const s = storeSpec(spec, name);
  const h = spec.hosts.find((x) => x.name === s.host);
  if (!h) throw new NotFoundError('host', `${s.host} (of backup store ${name})`);
  if (h.agent?.startsWith('https://'))
    return { store: name, host: h.name, agent: h.agent.replace(/\/+$/, '') };
  const addr = hostAddress(spec, h);
  if (!addr)
    throw new InvalidSpecError([
      {
        path: `hosts[${spec.hosts.indexOf(h)}]`,
        message: `backup store ${name} lives on ${h.name}, which other hosts cannot reach: give it an https:// agent address or an address`,
      },
    ]);
  return { store: name, host: h.name, agent: `https://${addr}:${AGENT_TCP_PORT}` };
}

/** How the backup side learns whether a host may be asked: heartbeats, and (in a cluster) leases. */
export interface HostStates {
  /** Hosts without a live lease (cluster only; empty otherwise). */
  failedHosts?: () => Promise<Set<string>>;
}

/** Refuses (naming the host's state) when `host` is unreachable by heartbeat or failed (no lease). */
export async function assertHostUp(
  store: Store,
  states: HostStates,
  host: string,
  what: string,
): Promise<void> {
  const failed = (await states.failedHosts?.()) ?? new Set<string>();
  if (failed.has(host))
    throw new UnavailableError(
      `${what}: host ${host} is failed (no live lease in the cluster); nothing was started`,
      `host/${host}`,
    );
  const h: HostHealth | undefined = (await hostHealth(store))[host];
  if (h?.state === 'unreachable')
    throw new UnavailableError(
      `${what}: host ${host} is unreachable (since ${h.since}, last seen ${h.lastSeen ?? 'never'}${h.error ? `: ${h.error}` : ''}); nothing was started`,
      `host/${host}`,
    );
}

/** What polling reports and how long it waits (tests shorten both). */
export interface PollOptions {
  pollMs?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** A line of progress (a task's `progress`). */
  progress?: (line: string) => void;
  /** Waits `ms` (tests pass a fake). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** How long an agent may stay unreachable (a restart) before its job counts as lost (default 60 s). */
  lostAfterMs?: number;
}

/** Consecutive failed polls (agent unreachable) before a job counts as lost, once `lostAfterMs` has passed too. */
const POLL_FAILURES_MAX = 10;
/** An agent restarting answers again within this, then says what became of the job (its record). */
const AGENT_AWAY_MS = 60_000;

const defaultSleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    // The listener goes with the timer: one task signal outlives thousands of polls.
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

/** Size in readable units, for progress and events. */
export function bytesText(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/**
 * Polls job `job` on `host` until it ends; its progress goes to `opts.progress` at each tenth done. A failed job
 * throws its error (kind and message as the agent gave them); a job the agent no longer knows (it restarted), an
 * agent that stops answering, and the overall timeout throw errors naming the host.
 */
export async function pollJob(
  agent: BackupAgent,
  host: string,
  job: BackupJob,
  what: string,
  opts: PollOptions = {},
): Promise<BackupJob> {
  const pollMs = opts.pollMs ?? BACKUP_JOB_POLL_MS;
  const deadline = Date.now() + (opts.timeoutMs ?? BACKUP_JOB_TIMEOUT_MS);
  const sleep = opts.sleep ?? defaultSleep;
  let cur = job;
  let failures = 0;
  let awaySince = 0;
  let lastTenth = -1;
  for (;;) {
    if (cur.state !== 'running') break;
    const { done, total } = cur.progress;
    const tenth = total > 0 ? Math.floor((done * 10) / total) : 0;
    if (tenth !== lastTenth && total > 0) {
      lastTenth = tenth;
      opts.progress?.(
        `${what}: ${Math.floor((done * 100) / total)}% (${bytesText(done)} of ${bytesText(total)})`,
      );
    }
    if (opts.signal?.aborted)
      throw new InvalidStateError(
        `${what}: cancelled (job ${cur.id} on ${host} may still run)`,
        `host/${host}`,
      );
    if (Date.now() > deadline)
      throw new TimeoutError(
        `${what}: job ${cur.id} on ${host} did not end within ${Math.round((opts.timeoutMs ?? BACKUP_JOB_TIMEOUT_MS) / 1000)} s`,
        `host/${host}`,
      );
    await sleep(pollMs, opts.signal);
    if (opts.signal?.aborted) continue;
    try {
      cur = await agent.job(cur.id);
      failures = 0;
    } catch (e) {
      // Agents keep job records across restarts (a cut-short job reads `failed: agent restarted`): an unknown job
      // is one of an older agent, or one whose record was lost.
      if (e instanceof VmlinkError && e.kind === 'not-found')
        throw new UnavailableError(
          `${what}: the agent of ${host} no longer knows job ${cur.id} (it restarted mid-job without its record); nothing of it was kept`,
          `host/${host}`,
        );
      if (failures++ === 0) awaySince = Date.now();
      if (failures >= POLL_FAILURES_MAX && Date.now() - awaySince >= (opts.lostAfterMs ?? AGENT_AWAY_MS))
        throw new UnavailableError(
          `${what}: lost the agent of ${host} while job ${cur.id} ran: ${(e as Error).message}`,
          `host/${host}`,
          e,
        );
    }
  }
  for (const n of cur.notes ?? []) opts.progress?.(`${what}: ${n}`);
  if (cur.state === 'failed') throw jobError(cur, host, what);
  return cur;
}

/** The error of a failed job: its kind as the agent named it, the message prefixed with what it was. */
export function jobError(job: BackupJob, host: string, what: string): VmlinkError {
  const kind = (ErrorKinds as readonly string[]).includes(job.errorKind ?? '')
    ? (job.errorKind as ErrorKind)
    : 'internal';
  return new VmlinkError(kind, `${what} failed on ${host}: ${job.error ?? 'no reason given'}`, {
    subject: `host/${host}`,
  });
}
