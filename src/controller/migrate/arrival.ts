// The switch-over with the target resuming on arrival (docs/mobility.md, "Switch-over"): the owner record and its
// fencing token move to the target before the stream starts, the target's agent checks them then (armed), and it
// resumes the guest by itself once QEMU loaded the whole state and the stream ended cleanly: no controller round trip
// inside the guest's pause. The source never resumes by itself once its QEMU sent the whole state (`holdOnceSent`).
// After a failure the source runs again only once the target proved it never ran (it answered an abort with the VM
// removed), or when the source's QEMU never sent the state's end (then no target can have run it).
import type { MigrationJob } from '../../agent/wire-migrate.js';
import type { OwnedVm } from '../../shared/cluster.js';
import { ConflictError, VmlinkError } from '../../shared/errors.js';
import { sleep } from '../../shared/time.js';
import { follow, rolledBack, type SwitchOver } from './switch-over.js';

/**
 * Whether migrations switch over with the target resuming on arrival (else on the controller's go). Measured side by
 * side in bench/migrate.ts (variants `arrival` and `go`, docs/mobility.md).
 */
export const MIGRATION_RESUME_ON_ARRIVAL = true;
/** Tries at moving the owner record back to the source after a rollback (etcd may be briefly unreachable). */
const RECORD_BACK_TRIES = 3;
/** How long a rollback waits for the source's job to end before resuming the source (ms). */
const SOURCE_END_WAIT_MS = 30_000;

export async function switchOnArrival(sw: SwitchOver): Promise<{ job?: MigrationJob; moved: OwnedVm }> {
  const { deps, vm, from, to, id, owner, source, target, storage, step } = sw;
  const ownership = deps.ownership!;
  step({
    phase: 'switch-over',
    note: `moving vm ${vm}'s owner record to ${to} before the stream: ${to} resumes it as soon as it arrives`,
  });
  const moved = await ownership
    .assign(vm, to, 'user', owner.token, owner.specHost, from)
    .catch(() => undefined);
  if (!moved) {
    await target.abort(id).catch(() => {});
    await storage.narrowTo(owner);
    throw rolledBack(
      new ConflictError(`vm ${vm}'s owner record changed before the migration`, `vm/${vm}`),
      vm,
      from,
    );
  }
  // The record back on the source (a rollback): its token is now the target's, so only a record still at it moves.
  const back = async (): Promise<OwnedVm | undefined> => {
    for (let i = 0; i < RECORD_BACK_TRIES; i++) {
      const b = await ownership
        .assign(vm, from, owner.reason, moved.token, owner.specHost, to)
        .catch(() => undefined);
      if (b) return b;
      if ((await ownership.get(vm).catch(() => undefined))?.token !== moved.token) return undefined;
      await sleep(200 * (i + 1));
    }
    return undefined;
  };

  try {
    // The target's owner check, now: it refuses unless the record names it under this token and it holds its lease.
    await target.resume(id, { fence: { token: moved.token }, onArrival: true });
  } catch (e) {
    // Not armed: it never runs the guest by itself, and the source has not started.
    step({ phase: 'rollback', note: `removing the incoming vm ${vm} from ${to}; it runs on ${from}` });
    await target.abort(id).catch(() => {});
    const b = await back();
    if (b) await storage.narrowTo(b);
    throw b ? rolledBack(e, vm, from) : recordStuck(e, sw, 'runs');
  }

  let job: MigrationJob | undefined;
  try {
    job = await source.start({ ...sw.outgoing, holdOnceSent: true });
    job = await follow(deps, source.job, job, step, sw.timeoutMs);
    // Completed: the target resumed by itself, or is about to; this waits for that outcome.
    step({ phase: 'switch-over', note: `vm ${vm} sent; waiting for ${to} to have resumed it on arrival` });
    await target.resume(id, { fence: { token: moved.token } });
    return { job, moved };
  } catch (e) {
    return rollBack(sw, moved, back, e);
  }
}

/**
 * After a failure once the record moved: asks the target to remove the incoming VM unless it already runs it. Ran:
 * the migration succeeded after all. Removed: the record goes back and the source runs again. No answer: the source
 * runs again only if its QEMU never sent the state's end; otherwise nothing resumes and the error says where it stands.
 */
async function rollBack(
  sw: SwitchOver,
  moved: OwnedVm,
  back: () => Promise<OwnedVm | undefined>,
  e: unknown,
): Promise<{ job?: MigrationJob; moved: OwnedVm }> {
  const { vm, from, to, id, source, target, storage, step } = sw;
  const verdict = await target.abort(id).catch((err: Error) => err);
  if (!(verdict instanceof Error) && verdict.ran) {
    step({
      phase: 'switch-over',
      note: `vm ${vm} resumed on ${to} on arrival (the controller then saw: ${(e as Error).message})`,
    });
    const job = await source.job(id).catch(() => undefined);
    return { ...(job ? { job } : {}), moved };
  }
  const job = await sourceEnd(sw);
  const neverSent = job?.state === 'failed' && !job.sourcePaused;
  if (verdict instanceof Error && !neverSent)
    throw new VmlinkError(
      'exec',
      `migration of vm ${vm} failed and ${to} did not answer (${verdict.message}): it may run there (its owner record names ${to}); it stays paused on ${from} and nothing resumes it: ${(e as Error).message}`,
      { subject: `vm/${vm}`, cause: e },
    );
  step({ phase: 'rollback', note: `vm ${vm} never ran on ${to}; it runs on ${from} again` });
  const b = await back();
  if (!b) throw recordStuck(e, sw, neverSent ? 'runs' : 'paused');
  await storage.narrowTo(b);
  // A source job still running here is cancelled by its stream's end: the target removed the incoming VM.
  await source
    .rollback(id)
    .catch((err: Error) =>
      step({ phase: 'rollback', note: `vm ${vm} could not be resumed on ${from}: ${err.message}` }),
    );
  throw rolledBack(e, vm, from);
}

/** The source's job once it ended (undefined: no answer, or still running after SOURCE_END_WAIT_MS). */
async function sourceEnd(sw: SwitchOver): Promise<MigrationJob | undefined> {
  const deadline = Date.now() + SOURCE_END_WAIT_MS;
  for (;;) {
    const job = await sw.source.job(sw.id).catch(() => undefined);
    if (job?.state !== 'running' || Date.now() > deadline) return job;
    await sleep(100);
  }
}

/** The record could not go back to the source: the guest never ran on the target, and the error says so. */
function recordStuck(e: unknown, sw: SwitchOver, source: 'runs' | 'paused'): VmlinkError {
  return new VmlinkError(
    'conflict',
    `migration of vm ${sw.vm} failed and it never ran on ${sw.to}, but its owner record could not be moved back to ${sw.from} (it still names ${sw.to}, or changed); the guest ${source === 'runs' ? 'runs' : 'is paused'} on ${sw.from}: migrate it again or apply: ${(e as Error).message}`,
    { subject: `vm/${sw.vm}`, cause: e },
  );
}
