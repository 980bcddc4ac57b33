// The integration run's schedule (test/helpers/int-run.ts): which test file starts next on a free worker. Pure, so
// that the plan can be simulated from the measured durations (`--dry-run`) and unit-tested.
//
// Each job has a class with a limit of its own running at once: `guest` files boot QEMU guests (at most `guest`, the
// VM lock's slots, see vmlock.ts), `light` files (vitest.config.ts's LIGHT list), the `unit` tests. Guest files that
// share a group never overlap: those that start machine-wide storage servers (tgtd control ports, rpcbind, ganesha's
// files), and the big labs (three hosts, several guests), whose probes time out when two of them share the CPUs; an `exclusive` guest file (one that measures
// the whole machine's CPU) runs with no other guest file and not beside the unit tests; once the unit tests are done
// and it heads the guest queue (the guest files before it have started), no other guest file starts before it.

export type JobClass = 'unit' | 'light' | 'guest';

export interface Job {
  /** The file's short name (`web-ui` for test/integration/web-ui.int.test.ts), or `unit`. */
  name: string;
  cls: JobClass;
  /** Expected duration in seconds (the last measured one). */
  seconds: number;
  /** Files sharing a group never overlap. */
  groups?: string[];
  exclusive?: boolean;
  /** Ahead of every job of the queue, whatever its duration (the static checks: a failure there ends the run). */
  first?: boolean;
}

export interface Limits {
  unit: number;
  light: number;
  guest: number;
}

/**
 * The queue's order: `first` jobs, then longest first (a long file that starts last ends the run late); each class's
 * limit then lets the guest files (the critical path, tried first by `next`), the light files and the unit tests
 * start together. Ties by name.
 */
export function order(jobs: Job[]): Job[] {
  return [...jobs].sort(
    (a, b) => Number(!!b.first) - Number(!!a.first) || b.seconds - a.seconds || a.name.localeCompare(b.name),
  );
}

/** The next job to start given the running ones, or undefined when none may start now. Does not change `queue`. */
export function next(queue: readonly Job[], running: readonly Job[], limits: Limits): Job | undefined {
  const count = (cls: JobClass) => running.filter((j) => j.cls === cls).length;
  const guestsRunning = running.filter((j) => j.cls === 'guest');
  const exclusiveRunning = guestsRunning.some((j) => j.exclusive);
  // The unit tests load every CPU too: an exclusive file waits for them, and holds back no other file meanwhile.
  const unitPending = [...running, ...queue].some((j) => j.cls === 'unit');
  let guestBarrier = false;
  let firstGuest = true;
  // Guest files first: they are the run's critical path (one slot by default), so a free worker never takes a long
  // light file or the unit tests while a guest file could start (that left the guest slot idle for minutes).
  const guestsFirst = [...queue.filter((j) => j.cls === 'guest'), ...queue.filter((j) => j.cls !== 'guest')];
  for (const job of guestsFirst) {
    if (count(job.cls) >= limits[job.cls]) continue;
    if (job.cls === 'light') return job;
    if (job.cls === 'unit') {
      if (exclusiveRunning) continue;
      return job;
    }
    const first = firstGuest;
    firstGuest = false;
    if (guestBarrier || exclusiveRunning) continue;
    if (job.exclusive) {
      // Not ahead of unit tests still queued either: they start first, and it waits for them.
      if (guestsRunning.length === 0 && !unitPending) return job;
      // Once it heads the guest queue it waits for the running guest files to end, and none starts meanwhile.
      if (!unitPending && first) guestBarrier = true;
      continue;
    }
    if (job.groups?.some((grp) => guestsRunning.some((j) => j.groups?.includes(grp)))) continue;
    return job;
  }
  return undefined;
}

export interface PlannedJob {
  job: Job;
  worker: number;
  start: number;
  end: number;
}

/** Runs the schedule on paper: each job takes its `seconds`. Returns when each starts and ends, and the total. */
export function simulate(
  jobs: Job[],
  workers: number,
  limits: Limits,
): { plan: PlannedJob[]; total: number } {
  const queue = order(jobs);
  const running: PlannedJob[] = [];
  const plan: PlannedJob[] = [];
  const free = Array.from({ length: workers }, (_, i) => i);
  let now = 0;
  while (queue.length > 0 || running.length > 0) {
    for (;;) {
      if (free.length === 0) break;
      const job = next(
        queue,
        running.map((r) => r.job),
        limits,
      );
      if (!job) break;
      queue.splice(queue.indexOf(job), 1);
      const p = { job, worker: free.shift()!, start: now, end: now + job.seconds };
      running.push(p);
      plan.push(p);
    }
    if (running.length === 0) throw new Error(`no job can start: ${queue.map((j) => j.name).join(', ')}`);
    running.sort((a, b) => a.end - b.end);
    const done = running.shift()!;
    now = done.end;
    free.push(done.worker);
    free.sort((a, b) => a - b);
  }
  return { plan, total: now };
}
