// The two switch-overs of a live migration (docs/mobility.md, "Switch-over"): on the controller's go (QEMU completes,
// the owner record moves, the target is told to run) and what both share (the source's job followed, the error said
// with where the guest runs). The other, resume on arrival, is arrival.ts.
import type { MigrationJob, OutgoingRequest } from '../../agent/wire-migrate.js';
import type { OwnedVm } from '../../shared/cluster.js';
import { ConflictError, VmlinkError } from '../../shared/errors.js';
import { sleep } from '../../shared/time.js';
import type { MigrationCalls, MigrationDeps, MigrationStep } from './run.js';
import type { MigrationStorage } from './shared-storage.js';

/** How often the source's job is polled (ms). */
export const MIGRATION_JOB_POLL_MS = 100;
/**
 * How often once memory's first pass is done (ms): the switch-over may come at any poll then, and on the controller's
 * go the guest stays paused until the controller sees it and resumes the target, so every poll interval there is
 * guest downtime.
 */
export const MIGRATION_JOB_FINAL_POLL_MS = 20;

/** What either switch-over needs (`migrate` prepared the target; the source has not started). */
export interface SwitchOver {
  deps: MigrationDeps;
  vm: string;
  from: string;
  to: string;
  id: string;
  /** The owner record as the migration found it (on the source). */
  owner: OwnedVm;
  source: MigrationCalls;
  target: MigrationCalls;
  storage: MigrationStorage;
  step: (s: MigrationStep) => void;
  timeoutMs: number;
  outgoing: OutgoingRequest;
}

/**
 * The switch-over on the controller's go: QEMU completes (guest paused on the source, whole on the target), then the
 * owner record moves and the target is told to run. Any failure: the guest runs on the source.
 */
export async function switchOnGo(sw: SwitchOver): Promise<{ job: MigrationJob; moved: OwnedVm }> {
  const { deps, vm, from, to, id, owner, source, target, storage, step } = sw;
  let job: MigrationJob;
  try {
    job = await source.start(sw.outgoing);
    job = await follow(deps, source.job, job, step, sw.timeoutMs);
  } catch (e) {
    step({ phase: 'rollback', note: `removing the incoming vm ${vm} from ${to}; it runs on ${from}` });
    await target.abort(id).catch(() => {});
    await storage.narrowTo(owner);
    throw rolledBack(e, vm, from);
  }

  // QEMU completed: the guest is paused on the source, whole on the target. The record moves, then the target runs.
  step({ phase: 'switch-over', note: `moving vm ${vm}'s owner record to ${to}` });
  const moved = await deps
    .ownership!.assign(vm, to, 'user', owner.token, owner.specHost, from)
    .catch(() => undefined);
  try {
    if (!moved) throw new ConflictError(`vm ${vm}'s owner record changed during the migration`, `vm/${vm}`);
    await target.resume(id, { fence: { token: moved.token } });
  } catch (e) {
    step({ phase: 'rollback', note: `vm ${vm} resumes on ${from}` });
    const back = moved
      ? await deps
          .ownership!.assign(vm, from, owner.reason, moved.token, owner.specHost, to)
          .catch(() => undefined)
      : owner;
    await target.abort(id).catch(() => {});
    if (back) await storage.narrowTo(back);
    await source.rollback(id);
    throw rolledBack(e, vm, from);
  }
  return { job, moved };
}

/** Polls the source's job until it ends; throws its error when it failed. */
export async function follow(
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
export function rolledBack(e: unknown, vm: string, from: string): VmlinkError {
  const msg = `migration of vm ${vm} failed and was rolled back; it runs on ${from}: ${(e as Error).message}`;
  return e instanceof VmlinkError
    ? new VmlinkError(e.kind, msg, { subject: `vm/${vm}`, cause: e })
    : new VmlinkError('exec', msg, { subject: `vm/${vm}`, cause: e });
}
