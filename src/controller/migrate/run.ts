// The live migration task (docs/mobility.md): explain first (the run refuses while a blocker stands), then the
// target prepares the incoming VM (its taps ready, QEMU paused with `-incoming defer`), the source's QEMU migrates
// through its agent to the target's over mutual TLS, progress from `query-migrate`. The owner record moves to the
// target by compare-and-set before the target's guest can run (the fencing token is checked there, like a start):
// before the stream, with the target resuming on arrival (arrival.ts, the default), or once QEMU completed, on the
// controller's go (switch-over.ts). A failure leaves the guest running on the source unless the target may run it.
import { randomUUID } from 'node:crypto';
import type { FencingToken } from '../../shared/cluster.js';
import {
  ConflictError,
  InvalidRequestError,
  InvalidSpecError,
  InvalidStateError,
  NotFoundError,
  UnsupportedError,
} from '../../shared/errors.js';
import { benchTuning } from '../../shared/migrate-tuning.js';
import { AGENT_TCP_PORT } from '../../shared/paths.js';
import type { Spec } from '../../spec/schema.js';
import { hostAddress } from '../../spec/topology.js';
import type { AgentFactory, AgentPort } from '../hosts.js';
import type { OwnershipStore } from '../ownership.js';
import type { Store } from '../store/types.js';
import { MIGRATION_RESUME_ON_ARRIVAL, switchOnArrival } from './arrival.js';
import { explainMigration, MIGRATION_DOWNTIME_LIMIT_MS, type MigrationExplain } from './explain.js';
import { gatherFacts } from './facts.js';
import { claimMigration, releaseMigration } from './in-flight.js';
import { MigrationStorage, type MigrationStorageReport } from './shared-storage.js';
import { type SwitchOver, switchOnGo } from './switch-over.js';

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
  /** The switch-over (tests); absent: the bench's variant, else MIGRATION_RESUME_ON_ARRIVAL. */
  resumeOnArrival?: boolean;
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

export type MigrationCalls = ReturnType<typeof migrationCalls>;

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
  if (!claimMigration(vm)) throw new ConflictError(`vm ${vm} is already migrating`, `vm/${vm}`);
  try {
    return await migrate(deps, vm, to);
  } finally {
    releaseMigration(vm);
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
  // Which switch-over (a bench variant's file read before anything is prepared: a bad one fails here).
  const arrival =
    deps.resumeOnArrival ?? (await benchTuning())?.resumeOnArrival ?? MIGRATION_RESUME_ON_ARRIVAL;
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
  const sw: SwitchOver = {
    deps,
    vm,
    from,
    to,
    id,
    owner,
    source,
    target,
    storage,
    step,
    timeoutMs: explain.blockMigration ? MIGRATION_BLOCK_TIMEOUT_MS : MIGRATION_TIMEOUT_MS,
    outgoing: {
      id,
      vm,
      to: { host: to, agent: peerAgentAddress(spec, to) },
      downtimeLimitMs: MIGRATION_DOWNTIME_LIMIT_MS,
    },
  };
  const { job, moved } = arrival ? await switchOnArrival(sw) : await switchOnGo(sw);
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
  const p = job?.progress;
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
