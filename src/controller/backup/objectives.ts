// A backup policy's objectives for one VM (issue 12, docs/backup.md "Policies, schedules and objectives"): RPO, RTO
// and the 3-2-1 rule, from what the stores list now. Pure: the backup manager gathers the inputs (the spec, the VM's
// host, each store's snapshot list with verify outcomes, the last restore test) every BACKUP_MANAGER_TICK_MS and after
// each run, and turns state changes into `backup.objective-drift` / `backup.objective-ok` events.
//
// States: `ok` (declared and met), `drift` (declared and not met: the problem lines say what and what to do),
// `unknown` (not declared, or not measurable yet: no restore test, every store unreachable).
import type { ObjectiveStatus, SnapshotSummary } from '../../shared/backup.js';

/** A store as objectives see it: where it is, and what it lists now (absent: it did not answer, `unreachable` why). */
export interface ObjectiveStoreInput {
  name: string;
  host: string;
  offsite: boolean;
  /** The store it pulls from (offsite stores). */
  pullFrom?: string;
  snapshots?: readonly SnapshotSummary[];
  unreachable?: string;
}

export interface ObjectiveInput {
  policy: { name: string; store: string; rpoMinutes?: number; rtoMinutes?: number; rule?: '3-2-1' | 'none' };
  vm: string;
  /** The host the VM runs on now: its live disks are one copy on that machine. Absent: the VM is not placed. */
  vmHost?: string;
  /** Every store of the spec (or just the relevant ones): the policy's store and the stores pulling from it,
   * directly or through another, are used; the rest are ignored. */
  stores: readonly ObjectiveStoreInput[];
  /** The last restore-and-boot test of this policy and VM. */
  lastRestoreTest?: { at: Date; ok: boolean; seconds?: number; error?: string };
  now: Date;
}

const MINUTE = 60_000;

/** The policy's store and every store pulling from it (transitively), in that order; a cycle stops. */
export function storesOfPolicy(
  storeName: string,
  stores: readonly ObjectiveStoreInput[],
): ObjectiveStoreInput[] {
  const out: ObjectiveStoreInput[] = [];
  const seen = new Set<string>();
  const queue = [storeName];
  while (queue.length > 0) {
    const name = queue.shift() as string;
    if (seen.has(name)) continue;
    seen.add(name);
    const s = stores.find((x) => x.name === name);
    if (s) out.push(s);
    for (const p of stores) if (p.pullFrom === name && !seen.has(p.name)) queue.push(p.name);
  }
  return out;
}

const round = (n: number) => Math.round(n * 10) / 10;
const line = (s: string) => (s.length > 500 ? `${s.slice(0, 497)}...` : s);

/** Evaluates RPO, RTO and the 3-2-1 rule for `input.vm` under `input.policy`. */
export function evaluateObjectives(input: ObjectiveInput): ObjectiveStatus {
  const { policy, vm, now } = input;
  const problems: string[] = [];
  const stores = storesOfPolicy(policy.store, input.stores);
  const reachable = stores.filter((s) => s.snapshots !== undefined);
  for (const s of stores) {
    if (s.snapshots === undefined) {
      problems.push(
        line(`store ${s.name} on ${s.host} did not answer${s.unreachable ? `: ${s.unreachable}` : ''}`),
      );
    }
  }
  if (!stores.some((s) => s.name === policy.store)) {
    problems.push(line(`store ${policy.store} of policy ${policy.name} is not known`));
  }

  // Every copy of this VM's snapshots: (store, summary); a copy is good unless its last verify there failed.
  const copies = reachable.flatMap((s) =>
    (s.snapshots ?? []).filter((snap) => snap.vm === vm).map((snap) => ({ store: s, snap })),
  );
  const time = (snap: SnapshotSummary) => Date.parse(snap.createdAt);
  const good = copies.filter((c) => c.snap.verify?.ok !== false);
  const newestGood = good.reduce<(typeof good)[number] | undefined>(
    (best, c) => (best === undefined || time(c.snap) > time(best.snap) ? c : best),
    undefined,
  );
  const newestAny = copies.reduce<(typeof copies)[number] | undefined>(
    (best, c) => (best === undefined || time(c.snap) > time(best.snap) ? c : best),
    undefined,
  );

  // Verify: the newest snapshot failed verify in some store.
  let verifyProblem: string | undefined;
  if (newestAny) {
    const failed = copies.find((c) => c.snap.id === newestAny.snap.id && c.snap.verify?.ok === false);
    if (failed?.snap.verify) {
      verifyProblem = line(
        `${failed.snap.id} failed verify on store ${failed.store.name} at ${failed.snap.verify.at}${
          failed.snap.verify.problems[0] ? `: ${failed.snap.verify.problems[0]}` : ''
        }`,
      );
      problems.push(verifyProblem);
    }
  }

  // RPO: the newest good snapshot is younger than rpoMinutes.
  const rpo: ObjectiveStatus['rpo'] = { state: 'unknown' };
  if (policy.rpoMinutes !== undefined) rpo.objectiveMinutes = policy.rpoMinutes;
  if (newestGood) {
    rpo.newest = newestGood.snap.id;
    rpo.newestAgeMinutes = round(Math.max(0, now.getTime() - time(newestGood.snap)) / MINUTE);
  }
  if (policy.rpoMinutes !== undefined) {
    if (reachable.length === 0) {
      rpo.state = 'unknown';
    } else if (!newestGood) {
      rpo.state = 'drift';
      problems.push(
        line(`RPO ${policy.rpoMinutes} min: no good snapshot of ${vm} yet (vmlink backup run ${vm})`),
      );
    } else if (now.getTime() - time(newestGood.snap) < policy.rpoMinutes * MINUTE) {
      rpo.state = 'ok';
    } else {
      rpo.state = 'drift';
      problems.push(
        line(
          `RPO ${policy.rpoMinutes} min: the newest good snapshot of ${vm} (${newestGood.snap.id}) is ${rpo.newestAgeMinutes} min old`,
        ),
      );
    }
  }

  // RTO: the last restore test's measured time is under rtoMinutes.
  const rto: ObjectiveStatus['rto'] = { state: 'unknown' };
  if (policy.rtoMinutes !== undefined) rto.objectiveMinutes = policy.rtoMinutes;
  const test = input.lastRestoreTest;
  if (test?.ok && test.seconds !== undefined) {
    rto.measuredMinutes = round(test.seconds / 60);
    rto.measuredAt = test.at.toISOString();
  }
  if (policy.rtoMinutes !== undefined && test) {
    if (!test.ok) {
      rto.state = 'drift';
      rto.measuredAt = test.at.toISOString();
      problems.push(
        line(
          `RTO ${policy.rtoMinutes} min: the restore test at ${test.at.toISOString()} failed${test.error ? `: ${test.error}` : ''}`,
        ),
      );
    } else if (test.seconds !== undefined && test.seconds < policy.rtoMinutes * 60) {
      rto.state = 'ok';
    } else {
      rto.state = 'drift';
      problems.push(
        line(
          `RTO ${policy.rtoMinutes} min: the restore test at ${test.at.toISOString()} took ${rto.measuredMinutes ?? '?'} min`,
        ),
      );
    }
  }

  // 3-2-1: copies of the newest good snapshot's data: the live VM, plus each store holding a good copy of it.
  const rule = policy.rule ?? 'none';
  const holding = newestGood
    ? good.filter((c) => c.snap.id === newestGood.snap.id).map((c) => c.store)
    : ([] as ObjectiveStoreInput[]);
  const machines = new Set<string>(holding.map((s) => s.host));
  if (input.vmHost !== undefined) machines.add(input.vmHost);
  const status321: ObjectiveStatus['rule'] = {
    state: 'unknown',
    rule,
    copies: holding.length + (input.vmHost !== undefined ? 1 : 0),
    machines: machines.size,
    offsite: holding.filter((s) => s.offsite).length,
    stores: holding.map((s) => s.name),
  };
  if (rule === '3-2-1') {
    if (reachable.length === 0) {
      status321.state = 'unknown';
    } else {
      const missing: string[] = [];
      if (status321.copies < 3) missing.push(`${status321.copies} copies (needs 3)`);
      if (status321.machines < 2)
        missing.push(`${status321.machines} machine${status321.machines === 1 ? '' : 's'} (needs 2)`);
      if (status321.offsite < 1) missing.push('no offsite copy (needs 1)');
      status321.state = missing.length === 0 ? 'ok' : 'drift';
      if (missing.length > 0) {
        const offsiteStores = stores.filter((s) => s.offsite).map((s) => s.name);
        const hint = !newestGood
          ? `no good snapshot of ${vm} yet (vmlink backup run ${vm})`
          : offsiteStores.length === 0
            ? `add an offsite store with pullFrom: ${policy.store}`
            : `vmlink backup sync (offsite ${offsiteStores.join(', ')} lacks it)`;
        problems.push(
          line(`3-2-1: ${newestGood ? newestGood.snap.id : vm} has ${missing.join(', ')}: ${hint}`),
        );
      }
    }
  }

  const out: ObjectiveStatus = { policy: policy.name, vm, rpo, rto, rule: status321, problems };
  if (verifyProblem !== undefined) out.verifyProblem = verifyProblem;
  return out;
}
