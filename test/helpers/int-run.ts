// The integration tests' runner (scripts/test-integration.sh; root): one vitest process per test file, started by
// a small work-stealing scheduler (test/helpers/schedule.ts) on WORKERS workers, longest file first by the durations
// measured last (test/integration/durations.json). By default one guest-booting file runs at a time (the VM lock's
// slots) and beside it light files (vitest.config.ts's LIGHT list) or, with VMLINK_UNIT_IN_LIGHT_LANE=1, the static checks
// (first; their failure stops the run) and the unit tests. Each file's output is printed in one block when it ends,
// so that parallel files never interleave their lines; a summary with each file's time follows.
//
//   tsx test/helpers/int-run.ts [--dry-run] [--record] [FILTER...]
// FILTERs select files whose path contains one of them (as vitest's own filters). --dry-run prints the plan on paper
// from the durations; --record writes the measured durations of the files that passed back to durations.json.
import type { ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LIGHT } from '../../vitest.config.js';
import { STOP_SIGNAL } from './graceful-stop.js';
import { groupAlive, spawnGroup, stopGroup } from './proc-group.js';
import { type Job, type Limits, next, order, simulate } from './schedule.js';

const ROOT = join(import.meta.dirname, '..', '..');
const DIR = join(ROOT, 'test', 'integration');
const DURATIONS = join(DIR, 'durations.json');
const VITEST = join(ROOT, 'node_modules', '.bin', 'vitest');
/** Guest files that never overlap another of their group (schedule.ts). */
const GROUPS: Record<string, string[]> = {
  // They start machine-wide storage servers (tgtd control ports, rpcbind, ganesha's files).
  storage: ['shared-storage', 'storage-nfs', 'storage-qemu'],
  // Three-host labs with several TCG guests: two at once left multihost's verify probes timing out (5 s) on 2 cores.
  'big-lab': ['ha-drills', 'migrate', 'multihost', 'shared-storage', 'verify-multihost'],
};
/** Guest files that measure the whole machine's CPU (the host-cpu alert): no other guest file beside them. */
const EXCLUSIVE = ['alerts'];
/** The guess for a file not in durations.json yet: it starts early, so a slow new file cannot end the run late. */
const UNKNOWN_SECONDS = 120;
/** On SIGINT/SIGTERM, how long a file may take to end its current test and run its afterAll hooks (a test's own
 * timeout is 240 s); a second signal cuts it short. Then its process group gets SIGTERM, and SIGKILL after KILL_MS. */
const STOP_GRACE_MS = 300_000;
const KILL_MS = 10_000;

const envInt = (name: string, dflt: number, max: number): number => {
  const raw = process.env[name];
  const n = raw === undefined || raw === '' ? dflt : Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${name} must be 1 to ${max}, not ${raw}`);
  return n;
};

const args = process.argv.slice(2);
const dryRun = args.includes('--dry-run');
const record = args.includes('--record');
const filters = args.filter((a) => !a.startsWith('--'));
const unknownFlag = args.find((a) => a.startsWith('--') && a !== '--dry-run' && a !== '--record');
if (unknownFlag) throw new Error(`unknown option ${unknownFlag} (--dry-run, --record, or file filters)`);

// Two workers and one guest slot by default: on a 2-core machine, four files at once with two guest files among them
// stretched system.int from 133 s to 465 s and timed out network-ovs's 15 s commands (1 Dec 2026). So one guest file
// runs beside one light file (or the unit tests), as the two lanes did; the gain is longest-first order and one queue.
const limits: Limits = {
  unit: 1,
  light: envInt('VMLINK_INT_LIGHT', 2, 4),
  guest: envInt('VMLINK_VM_SLOTS', 1, 4),
};
const workers = envInt('VMLINK_INT_WORKERS', 2, 8);

const durations = JSON.parse(readFileSync(DURATIONS, 'utf8')) as Record<string, number>;
const light = new Set(LIGHT.map((f) => f.replace(/^test\/integration\/|\.int\.test\.ts$/g, '')));
const fileOf = (name: string) => `test/integration/${name}.int.test.ts`;
const names = readdirSync(DIR)
  .filter((f) => f.endsWith('.int.test.ts'))
  .map((f) => f.slice(0, -'.int.test.ts'.length))
  .filter((n) => filters.length === 0 || filters.some((f) => fileOf(n).includes(f)));
const jobs: Job[] = names.map((name) => ({
  name,
  cls: light.has(name) ? 'light' : 'guest',
  seconds: durations[name] ?? UNKNOWN_SECONDS,
  groups: Object.keys(GROUPS).filter((grp) => GROUPS[grp]!.includes(name)),
  ...(EXCLUSIVE.includes(name) ? { exclusive: true } : {}),
}));
// The static checks (types, lint) and the unit tests: the unit class, one at a time, the checks first.
if (process.env.VMLINK_UNIT_IN_LIGHT_LANE === '1')
  jobs.push(
    { name: 'checks', cls: 'unit', seconds: durations.checks ?? 45, first: true },
    { name: 'unit', cls: 'unit', seconds: durations.unit ?? 300 },
  );
/** The command of a job that is not a test file (`vitest run --project unit` for the unit tests). */
const CHECKS = ['bash', [join(ROOT, 'scripts', 'static-checks.sh')]] as const;

const say = (line: string) => process.stdout.write(`[int] ${line}\n`);
const secs = (ms: number) => Math.round(ms / 1000);

if (dryRun) {
  const { plan, total } = simulate(jobs, workers, limits);
  for (const p of plan)
    say(
      `${String(p.start).padStart(5)} s  worker ${p.worker}  ${p.job.cls.padEnd(5)}  ${p.job.name} (${p.job.seconds} s)`,
    );
  say(`on paper: ${total} s with ${workers} workers, limits ${JSON.stringify(limits)}`);
  process.exit(0);
}

interface Running {
  job: Job;
  child: ChildProcess;
  started: number;
}
const logs = mkdtempSync(join(tmpdir(), 'vmlink-int-run-'));
const queue = order(jobs);
const running: Running[] = [];
const results: Array<{ job: Job; ok: boolean; ms: number; failure?: string }> = [];
const t0 = Date.now();
let stopping = false;
/** The groups being stopped (signal or leftovers): the runner exits once they are gone. */
const stops: Promise<void>[] = [];
let hurry: () => void = () => {};
const hurried = new Promise<void>((resolve) => {
  hurry = resolve;
});

function start(job: Job): void {
  const log = join(logs, `${job.name}.log`);
  const project = job.cls === 'unit' ? 'unit' : job.cls === 'light' ? 'integration-light' : 'integration';
  const [cmd, argv] =
    job.name === 'checks'
      ? CHECKS
      : [VITEST, ['run', '--project', project, ...(job.cls === 'unit' ? [] : [fileOf(job.name)])]];
  // The log file as stdout and stderr: the child writes on its own, the order of its lines is kept. A process group
  // of its own (proc-group.ts): on a signal the runner stops the file's vitest and everything it started as a whole.
  const out = openSync(log, 'w');
  const child = spawnGroup(cmd, [...argv], {
    cwd: ROOT,
    stdio: ['ignore', out, out],
    env: { ...process.env, VMLINK_VM_SLOTS: String(limits.guest) },
  });
  closeSync(out);
  running.push({ job, child, started: Date.now() });
  say(
    `start ${job.name} (${job.cls}, ~${job.seconds} s) at ${secs(Date.now() - t0)} s; running: ${running.map((r) => r.job.name).join(', ')}`,
  );
  child.once('close', (code, signal) => {
    const r = running.find((x) => x.child === child)!;
    running.splice(running.indexOf(r), 1);
    const ms = Date.now() - r.started;
    const ok = code === 0;
    const text = readFileSync(log, 'utf8');
    results.push({ job, ok, ms, ...(ok ? {} : { failure: failureOf(text) }) });
    // vitest waits for its workers: a process still in the group is one a test started and left running.
    if (!stopping && groupAlive(child.pid!)) {
      say(`${job.name} left processes running in its process group: stopping them`);
      stops.push(stopGroup(child, { graceMs: 0, killMs: KILL_MS }));
    }
    process.stdout.write(
      `\n──── ${job.name}: ${ok ? 'passed' : `FAILED (${signal ?? `exit ${code}`})`} in ${secs(ms)} s ────\n`,
    );
    process.stdout.write(text);
    say(`done ${job.name} ${ok ? 'passed' : 'FAILED'} in ${secs(ms)} s (at ${secs(Date.now() - t0)} s)`);
    // Failed static checks fail the run whatever the tests say: it stops now rather than in half an hour.
    if (!ok && job.name === 'checks' && !stopping) stopAll('the static checks failed');
    fill();
  });
}

/** Up to 6,000 characters of a failed file's output: vitest's failure summary when it printed one, else the end. */
function failureOf(log: string, max = 6_000): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: vitest's colours
  const plain = log.replace(/\x1b\[[0-9;]*m/g, '');
  const at = plain.search(/^.*(Failed Tests|Failed Suites|Unhandled Errors?)/m);
  const part = at >= 0 ? plain.slice(at) : plain;
  return part.length > max ? `… ${part.slice(0, max)}` : part;
}

function fill(): void {
  while (!stopping && running.length < workers) {
    const job = next(
      queue,
      running.map((r) => r.job),
      limits,
    );
    if (!job) break;
    queue.splice(queue.indexOf(job), 1);
    start(job);
  }
  if (running.length === 0) void Promise.all(stops).then(finish);
}

function finish(): void {
  const failed = results.filter((r) => !r.ok);
  process.stdout.write('\n');
  say(
    `files by time (s): ${[...results]
      .sort((a, b) => b.ms - a.ms)
      .map((r) => `${r.job.name} ${secs(r.ms)}${r.ok ? '' : ' FAILED'}`)
      .join(', ')}`,
  );
  say(
    `${results.length} jobs in ${secs(Date.now() - t0)} s (${workers} workers, limits ${JSON.stringify(limits)})`,
  );
  if (record) {
    const merged = { ...durations };
    for (const r of results) if (r.ok) merged[r.job.name] = secs(r.ms);
    const sorted = Object.fromEntries(
      Object.entries(merged).sort(([a], [b]) => (a === 'unit' ? -1 : b === 'unit' ? 1 : a.localeCompare(b))),
    );
    writeFileSync(DURATIONS, `${JSON.stringify(sorted, null, 2)}\n`);
    say(`recorded the durations in ${DURATIONS}`);
  }
  if (queue.length > 0) say(`not started: ${queue.map((j) => j.name).join(', ')}`);
  // The failures again, last: CI keeps only the tail of a long run's output.
  for (const r of failed) process.stdout.write(`\n──── why ${r.job.name} failed ────\n${r.failure}\n`);
  if (failed.length > 0) {
    say(
      `FAILED: ${failed.map((r) => (r.job.name === 'checks' ? 'the static checks' : r.job.cls === 'unit' ? 'the unit tests' : fileOf(r.job.name))).join(' ')}`,
    );
    if (failed.some((r) => r.job.name === 'checks')) say('again: bash scripts/static-checks.sh');
    if (failed.some((r) => r.job.name === 'unit')) say('again: npx vitest run --project unit');
    const files = failed.filter((r) => r.job.cls !== 'unit').map((r) => `test/integration/${r.job.name}.int`);
    if (files.length > 0) say(`again: bash scripts/test-integration.sh ${files.join(' ')}`);
  }
  if (existsSync(logs)) rmSync(logs, { recursive: true, force: true });
  process.exit(failed.length > 0 || queue.length > 0 ? 1 : 0);
}

// Ctrl-C or a CI timeout: nothing new starts; each running file is asked to stop (graceful-stop.ts: its current test
// ends, its afterAll hooks take its labs down), then its process group is killed. A second signal hurries.
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.on(sig, () => {
    if (stopping) {
      say(`${sig} again: killing the process groups of ${running.map((r) => r.job.name).join(', ')} now`);
      hurry();
      return;
    }
    stopAll(sig);
  });

/** Starts nothing new and asks each running file to stop (its afterAll cleanup runs); the run then fails. */
function stopAll(why: string): void {
  stopping = true;
  say(
    running.length
      ? `${why}: stopping ${running.map((r) => r.job.name).join(', ')} (their afterAll cleanup runs; signal again to kill now)`
      : `${why}: starting nothing more`,
  );
  for (const r of running)
    stops.push(stopGroup(r.child, { ask: STOP_SIGNAL, graceMs: STOP_GRACE_MS, killMs: KILL_MS }, hurried));
}

if (jobs.length === 0) {
  say('no test file matches');
  process.exit(0);
}
fill();
