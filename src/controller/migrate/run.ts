// The live migration task (docs/mobility.md): explain first (the run refuses while a blocker stands), then the
// target prepares the incoming VM (its taps ready, QEMU paused with `-incoming defer`), the source's QEMU migrates
// through its agent to the target's over mutual TLS, progress from `query-migrate`; once QEMU completed, the owner
// record moves to the target by compare-and-set, and only then does the target's guest run (the fencing token is
// checked there, like a start). Any failure before that leaves the guest running on the source.
import { randomUUID } from 'node:crypto';
import type { MigrationJob } from '../../agent/wire-migrate.js';
import type { FencingToken } from '../../shared/cluster.js';
import {
  ConflictError,
  InvalidRequestError,
  InvalidSpecError,
  InvalidStateError,
  NotFoundError,
  UnsupportedError,
  VmlinkError,
} from '../../shared/errors.js';
import { AGENT_TCP_PORT } from '../../shared/paths.js';
import { sleep } from '../../shared/time.js';
import type { Spec } from '../../spec/schema.js';
import { hostAddress } from '../../spec/topology.js';
import type { AgentFactory, AgentPort } from '../hosts.js';
import type { OwnershipStore } from '../ownership.js';
import type { Store } from '../store/types.js';
import { explainMigration, MIGRATION_DOWNTIME_LIMIT_MS, type MigrationExplain } from './explain.js';
import { gatherFacts } from './facts.js';
import { MigrationStorage, type MigrationStorageReport } from './shared-storage.js';

/** How often the source's job is polled (ms). */
export const MIGRATION_JOB_POLL_MS = 100;
/**
 * How often once memory's first pass is done (ms): the switch-over may come at any poll then, and the guest stays
 * paused until the controller sees it and resumes the target, so every poll interval there is guest downtime.
 */
export const MIGRATION_JOB_FINAL_POLL_MS = 20;
/** A migration that has not completed in this long is cancelled (ms). */
export const MIGRATION_TIMEOUT_MS = 10 * 60_000;
/** The same with local disks to copy first (the source gives their copy 30 min to catch up), ms. */
export const MIGRATION_BLOCK_TIMEOUT_MS = 40 * 60_000;

/** One progress step of a migration. */
export interface MigrationStep {
  phase: 'explain' | 'prepare' | 'transfer' | 'switch-over' | 'done' | 'rollback';
  /** Of memory sent, while transferring. */
  percent?: number;
  note: string;
}

/** What a migration needs from the controller. */
export interface MigrationDeps {
  agents: AgentFactory;
  /** The applied (placed) spec, or undefined before the first apply. */
  spec: () => Promise<Spec | undefined>;
  /** Owner records: where the VM runs and its fencing token (a spec with `cluster:`, sqlite or etcd). */
  ownership?: OwnershipStore;
  progress?: (step: MigrationStep) => void;
  signal?: AbortSignal;
  /** Polling of the source's job (tests: shorter). */
  pollMs?: number;
  /** Where the fences of the VM's iscsi volumes record their events (shared-storage.ts). */
  events?: Pick<Store, 'appendEvent'>;
}

/** What a completed migration reports. */
export interface MigrationReport {
  vm: string;
  from: string;
  to: string;
  ok: true;
  explain: MigrationExplain;
  /** Wall time of the whole task (ms). */
  totalMs: number;
  /** QEMU's own figure of the guest's pause (ms). */
  downtimeMs?: number;
  /** QEMU's total migration time (ms). */
  qemuTotalMs?: number;
  transferredBytes: number;
  /** Local disks were copied (block migration). */
  blockMigration: boolean;
  /** Bytes of the local disks copied before the switch-over (block migration). */
  diskCopiedBytes?: number;
  /** The owner record's new fencing token. */
  token?: FencingToken;
  /** The VM's shared volumes: which iscsi ones are now fenced to the target (shared-storage.ts). */
  storage?: MigrationStorageReport;
}

// One migration per VM at a time, across every caller of this controller (API, balancer).
const migrating = new Set<string>();

/** Where `host`'s agent is reached by other hosts: its https:// spec address, else its underlay address. */
export function peerAgentAddress(spec: Spec, host: string): string {
  const h = spec.hosts.find((x) => x.name === host);
  if (!h) throw new NotFoundError('host', host);
  if (h.agent?.startsWith('https://')) return h.agent.replace(/\/+$/, '');
  const addr = hostAddress(spec, h);
  if (!addr)
    throw new InvalidSpecError([
      {
        path: `hosts[${spec.hosts.indexOf(h)}]`,
        message: `${host} cannot be reached by other hosts: give it an https:// agent address or an address`,
      },
    ]);
  return `https://${addr.includes(':') ? `[${addr}]` : addr}:${AGENT_TCP_PORT}`;
}

/** The applied spec, `vm`'s host (owner record first) and the spec's VM; refusals name what is missing. */
async function locate(deps: MigrationDeps, vm: string): Promise<{ spec: Spec; from: string }> {
  const spec = await deps.spec();
  if (!spec) throw new InvalidRequestError('no spec has been applied yet: apply one first');
  const v = spec.vms.find((x) => x.name === vm);
  if (!v) throw new NotFoundError('vm', vm);
  const owner = spec.cluster ? await deps.ownership?.get(vm) : undefined;
  return { spec, from: owner?.host ?? v.host };
}

/** The pre-flight explain of moving `vm` to `to` (what `vmlink vm migrate --explain` prints). */
export async function explainFor(
  deps: MigrationDeps,
  req: { vm: string; to: string },
): Promise<MigrationExplain> {
  const { spec, from } = await locate(deps, req.vm);
  return explainMigration(await gatherFacts(spec, deps.agents, { vm: req.vm, from, to: req.to }));
}

function migrationCalls(agent: AgentPort, host: string) {
  const {
    migrationIncoming,
    migrationResume,
    migrationAbort,
    migrationStart,
    migrationJob,
    migrationRollback,
  } = agent;
  if (
    !migrationIncoming ||
    !migrationResume ||
    !migrationAbort ||
    !migrationStart ||
    !migrationJob ||
    !migrationRollback
  )
    throw new UnsupportedError(`the agent of ${host} cannot take part in live migrations`);
  return {
    incoming: migrationIncoming.bind(agent),
    resume: migrationResume.bind(agent),
    abort: migrationAbort.bind(agent),
    start: migrationStart.bind(agent),
    job: migrationJob.bind(agent),
    rollback: migrationRollback.bind(agent),
  };
}

/**
 * Live-migrates running `vm` to host `to`: refuses (InvalidStateError listing each blocker with its fix) when the
 * explain has one; on any failure the guest keeps (or goes back to) running on the source, and the error says so.
 */
export async function runMigration(
  deps: MigrationDeps,
  req: { vm: string; to: string },
): Promise<MigrationReport> {
  const { vm, to } = req;
  if (migrating.has(vm)) throw new ConflictError(`vm ${vm} is already migrating`, `vm/${vm}`);
  migrating.add(vm);
  try {
    return await migrate(deps, vm, to);
  } finally {
    migrating.delete(vm);
  }
}

async function migrate(deps: MigrationDeps, vm: string, to: string): Promise<MigrationReport> {
  const t0 = Date.now();
  const step = (s: MigrationStep) => deps.progress?.(s);
  const { spec, from } = await locate(deps, vm);
  if (!spec.cluster || !deps.ownership)
    throw new InvalidRequestError(
      `live migration records where vm ${vm} runs in its owner record, which only a spec with cluster: keeps; add "cluster: { store: sqlite }" (one controller) or etcd, apply, then migrate`,
      `vm/${vm}`,
    );
  const facts = await gatherFacts(spec, deps.agents, { vm, from, to });
  const explain = explainMigration(facts);
  const failed = explain.checks.filter((c) => !c.ok);
  step({
    phase: 'explain',
    note: `${explain.ok ? 'possible' : 'blocked'}${failed.length ? `: ${failed.map((c) => c.message).join('; ')}` : ''}`,
  });
  if (!explain.ok)
    throw new InvalidStateError(
      `vm ${vm} cannot migrate to ${to}:\n${explain.checks
        .filter((c) => !c.ok && c.severity === 'blocker')
        .map((c) => `  ${c.message}${c.fix ? `\n    fix: ${c.fix}` : ''}`)
        .join('\n')}`,
      `vm/${vm}`,
    );
  const observed = facts.source!.vms.find((v) => v.name === vm)!;
  const owner = await deps.ownership.get(vm);
  if (!owner || owner.host !== from)
    throw new ConflictError(
      `vm ${vm}'s owner record ${owner ? `names ${owner.host}` : 'is missing'}, not ${from}: apply the spec, then migrate`,
      `vm/${vm}`,
    );
  const source = migrationCalls(deps.agents(spec, from), from);
  const target = migrationCalls(deps.agents(spec, to), to);
  const id = randomUUID();
  const storage = new MigrationStorage(
    { agents: deps.agents, ...(deps.events ? { events: deps.events } : {}) },
    spec,
    vm,
  );

  step({
    phase: 'prepare',
    note: `preparing vm ${vm} on ${to} (ports, QEMU waiting for the stream${explain.blockMigration ? `, its local disks ${explain.copiedDisks.map((d) => d.disk).join(', ')} exported to be copied` : ''})`,
  });
  // Its iscsi volumes let the target log in beside the source (both have them open until the switch-over).
  if (storage.fences)
    step({ phase: 'prepare', note: `letting ${to} in to vm ${vm}'s iscsi volumes beside ${from}` });
  await storage.openTo(owner, to).catch(async (e: unknown) => {
    await storage.narrowTo(owner);
    throw e;
  });
  try {
    await target.incoming({ id, vm: observed.config!, configHash: observed.configHash, from });
  } catch (e) {
    await storage.narrowTo(owner);
    throw e;
  }
  let job: MigrationJob;
  try {
    job = await source.start({
      id,
      vm,
      to: { host: to, agent: peerAgentAddress(spec, to) },
      downtimeLimitMs: MIGRATION_DOWNTIME_LIMIT_MS,
    });
    const timeoutMs = explain.blockMigration ? MIGRATION_BLOCK_TIMEOUT_MS : MIGRATION_TIMEOUT_MS;
    job = await follow(deps, source.job, job, step, timeoutMs);
  } catch (e) {
    step({ phase: 'rollback', note: `removing the incoming vm ${vm} from ${to}; it runs on ${from}` });
    await target.abort(id).catch(() => {});
    await storage.narrowTo(owner);
    throw rolledBack(e, vm, from);
  }

  // QEMU completed: the guest is paused on the source, whole on the target. The record moves, then the target runs.
  step({ phase: 'switch-over', note: `moving vm ${vm}'s owner record to ${to}` });
  const moved = await deps.ownership
    .assign(vm, to, 'user', owner.token, owner.specHost, from)
    .catch(() => undefined);
  try {
    if (!moved) throw new ConflictError(`vm ${vm}'s owner record changed during the migration`, `vm/${vm}`);
    await target.resume(id, { fence: { token: moved.token } });
  } catch (e) {
    step({ phase: 'rollback', note: `vm ${vm} resumes on ${from}` });
    const back = moved
      ? await deps.ownership
          .assign(vm, from, owner.reason, moved.token, owner.specHost, to)
          .catch(() => undefined)
      : owner;
    await target.abort(id).catch(() => {});
    if (back) await storage.narrowTo(back);
    await source.rollback(id);
    throw rolledBack(e, vm, from);
  }
  // The guest runs on the target: its iscsi volumes are fenced to it alone, the source's sessions closed. After the
  // resume, not before: the source's QEMU has flushed and inactivated its disks, and the guest's pause stays short.
  const fenced = await storage.narrowTo(moved);
  if (fenced.error)
    step({
      phase: 'switch-over',
      note: `vm ${vm} runs on ${to}, but its iscsi volumes still let ${from} in: ${fenced.error}`,
    });
  // The source's QEMU stays paused until its VM is removed; its ports go with it.
  step({ phase: 'done', note: `vm ${vm} runs on ${to}; removing it from ${from}` });
  await deps
    .agents(spec, from)
    .act({ kind: 'vm.delete', name: vm })
    .catch((e: Error) =>
      step({ phase: 'done', note: `vm ${vm} left paused on ${from}: ${e.message}; apply removes it` }),
    );
  const p = job.progress;
  return {
    vm,
    from,
    to,
    ok: true,
    explain,
    totalMs: Date.now() - t0,
    ...(p?.downtimeMs !== undefined ? { downtimeMs: p.downtimeMs } : {}),
    ...(p?.totalTimeMs !== undefined ? { qemuTotalMs: p.totalTimeMs } : {}),
    transferredBytes: p?.transferredBytes ?? 0,
    blockMigration: explain.blockMigration,
    ...(p?.diskDoneBytes !== undefined ? { diskCopiedBytes: p.diskDoneBytes } : {}),
    token: moved.token,
    storage: fenced,
  };
}

/** Polls the source's job until it ends; throws its error when it failed. */
async function follow(
  deps: MigrationDeps,
  get: (id: string) => Promise<MigrationJob>,
  first: MigrationJob,
  step: (s: MigrationStep) => void,
  timeoutMs: number,
): Promise<MigrationJob> {
  const deadline = Date.now() + timeoutMs;
  let job = first;
  let last = -1;
  while (job.state === 'running') {
    if (deps.signal?.aborted) throw new VmlinkError('exec', 'the migration was cancelled');
    if (Date.now() > deadline)
      throw new VmlinkError('timeout', `the migration did not complete in ${timeoutMs} ms`);
    const pass = job.progress?.dirtySyncCount ?? 0;
    await sleep(deps.pollMs ?? (pass >= 2 ? MIGRATION_JOB_FINAL_POLL_MS : MIGRATION_JOB_POLL_MS));
    job = await get(job.id);
    const p = job.progress;
    if (p?.status === 'disks' && p.diskTotalBytes) {
      // Block migration's first phase: the local disks' copy, before memory.
      const percent = Math.min(100, Math.round(((p.diskDoneBytes ?? 0) / p.diskTotalBytes) * 100));
      if (percent !== last) {
        last = percent;
        step({ phase: 'transfer', percent, note: `disks: ${percent}% of the local disks copied` });
      }
    } else if (p && p.totalBytes > 0) {
      const percent = Math.min(100, Math.round(((p.totalBytes - p.remainingBytes) / p.totalBytes) * 100));
      if (percent !== last) {
        last = percent;
        step({ phase: 'transfer', percent, note: `${p.status}: ${percent}% of memory sent` });
      }
    }
  }
  if (job.state === 'failed') throw new VmlinkError('exec', job.error ?? 'the source reported a failure');
  return job;
}

/** `e` said with where the guest runs now. */
function rolledBack(e: unknown, vm: string, from: string): VmlinkError {
  const msg = `migration of vm ${vm} failed and was rolled back; it runs on ${from}: ${(e as Error).message}`;
  return e instanceof VmlinkError
    ? new VmlinkError(e.kind, msg, { subject: `vm/${vm}`, cause: e })
    : new VmlinkError('exec', msg, { subject: `vm/${vm}`, cause: e });
}
