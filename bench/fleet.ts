// A simulated fleet of 1,000 hosts x 20 VMs against a real etcd (docs/fleet-sim.md): the simulator process
// (src/fleet-sim/main.ts: the real agent, its API and its lease per host, over the in-memory drivers) and, in this
// process, a controller on the etcd store with the HA manager and its API on a unix socket. Measures:
//   (1) the HA decision for one failed host of N: decide() on the engine's inputs for the full fleet (pure), and every
//       round the running manager makes;
//   (2) the end-to-end reaction: a host failed (lease revoked, as a clean agent stop; then a power loss, its lease
//       left to run out) until each of its VMs was assigned and started elsewhere (the HA events' own stamps);
//   (3) the balancer's plan time (src/controller/balance/plan.ts, where it is on this branch);
//   (4) the controller API's latency for `vm list` (GET /v1/vms) and `status` (GET /v1/status): p50/p95/p99, served
//       from the report cache (the monitor and the refresher running as in the daemon) and `?live=true` side by side;
//   and the simulator's memory per host.
//   npx tsx bench/fleet.ts [--hosts 1000] [--vms 20] [--samples 20] [--heartbeat 10]     (no root needed)
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import inspector from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createControllerApi } from '../src/controller/api.js';
import { EtcdCoordination } from '../src/controller/cluster/etcd-coordination.js';
import { Controller } from '../src/controller/controller.js';
import { decide } from '../src/controller/ha/decide.js';
import { parseHaTimes } from '../src/controller/ha/manager.js';
import type { DecideFn } from '../src/controller/ha/types.js';
import { hostHealth, Monitor } from '../src/controller/monitor.js';
import { EtcdStore } from '../src/controller/store/etcd.js';
import { TaskManager } from '../src/controller/tasks.js';
import { RecordingRunner } from '../src/exec/runner.js';
import { fleetSpecText, haFleetInputs, vmName, vmsPerHostThatFit } from '../src/fleet-sim/fleet-spec.js';
import { hostNames } from '../src/fleet-sim/sim.js';
import { etcdClient } from '../src/shared/etcd.js';
import { AnyAnswerSchema, HttpClient } from '../src/shared/http/client.js';
import { listen } from '../src/shared/http/server.js';
import { startTestEtcd } from '../test/helpers/etcd.js';
import { hostInfo, load1, numArg, onCleanup, round, runCleanups, sleep } from './lib.js';

/** The simulated agents' log (stderr): removed after a run that ended well, kept after a failed one. */
const SIM_LOG = join(tmpdir(), `vmlink-fleet-sim-${process.pid}.log`);
const HOSTS = numArg('--hosts', 1000);
const VMS = numArg('--vms', 20);
const SAMPLES = numArg('--samples', 20);
const HEARTBEAT = numArg('--heartbeat', 10);
// `--cpu-prof DIR`: a CPU profile of this process (the controller, its API, monitor and refresher) over the API
// sampling phase only, written to DIR/controller-api.cpuprofile (open it in Chrome's DevTools).
const CPU_PROF_DIR = (() => {
  const i = process.argv.indexOf('--cpu-prof');
  return i < 0 ? undefined : process.argv[i + 1];
})();
const TARGET_DECIDE_MS = 1000;
// The spec names etcd as real agents reach it (https); the simulator's agents are handed the test etcd's http URL.
const SPEC_ETCD = 'https://127.0.0.1:2379';

/** An event loop delay histogram in ms. */
const loopDist = (h: ReturnType<typeof monitorEventLoopDelay>) => ({
  p50: round(h.percentile(50) / 1e6, 1),
  p99: round(h.percentile(99) / 1e6, 1),
  max: round(h.max / 1e6, 1),
});

/** The p-th percentile (nearest rank) of `xs`. */
function pct(xs: readonly number[], p: number): number {
  if (!xs.length) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const dist = (xs: number[]) => ({
  n: xs.length,
  p50: round(pct(xs, 50), 1),
  p95: round(pct(xs, 95), 1),
  p99: round(pct(xs, 99), 1),
  max: round(Math.max(...xs), 1),
});
const fmt = (d: ReturnType<typeof dist>) =>
  `p50 ${d.p50} ms  p95 ${d.p95} ms  p99 ${d.p99} ms  max ${d.max} ms (n=${d.n})`;

/** The simulator process: its JSON lines in order, and commands to it. */
function startSim(
  args: string[],
  logFile: string,
): {
  proc: ChildProcess;
  next: () => Promise<Record<string, unknown>>;
  send: (l: string) => void;
} {
  const proc = spawn('npx', ['tsx', 'src/fleet-sim/main.ts', ...args], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    stdio: ['pipe', 'pipe', openSync(logFile, 'a')],
    env: { ...process.env, VMLINK_LOG: process.env.VMLINK_LOG ?? 'error' },
  });
  const waiting: Array<(o: Record<string, unknown>) => void> = [];
  const queued: Record<string, unknown>[] = [];
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(l) as Record<string, unknown>;
    } catch {
      return;
    }
    const w = waiting.shift();
    if (w) w(o);
    else queued.push(o);
  });
  const next = () =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const q = queued.shift();
      if (q) return resolve(q);
      proc.once('exit', (code) => reject(new Error(`the simulator exited (${code})`)));
      waiting.push(resolve);
    });
  return { proc, next, send: (l) => proc.stdin!.write(`${l}\n`) };
}

/** What was measured so far: written as the results (with `failed`) when a later step fails. */
const partial: Record<string, unknown> = {};
const RESULTS = fileURLToPath(new URL('./results/fleet.json', import.meta.url));

/** Writes a failed run's measurements, unless the results hold a complete run (never replaced by a failed one). */
function writePartial(error: unknown): void {
  try {
    if (existsSync(RESULTS) && !('failed' in (JSON.parse(readFileSync(RESULTS, 'utf8')) as object))) return;
  } catch {
    // unreadable results: replace them
  }
  const failed = (error instanceof Error ? error.message : String(error)).split('\n')[0]!.slice(0, 500);
  writeFileSync(RESULTS, `${JSON.stringify({ ...partial, failed, load: load1() }, null, 1)}\n`);
}

async function main(): Promise<void> {
  const info = hostInfo();
  Object.assign(partial, {
    at: new Date().toISOString(),
    machine: info,
    hosts: HOSTS,
    vmsPerHost: VMS,
    heartbeatSeconds: HEARTBEAT,
  });
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-flt-'));
  onCleanup('bench directory', () => rmSync(dir, { recursive: true, force: true }));
  const hosts = hostNames(HOSTS);
  const victims = { clean: hosts[1]!, power: hosts[2]! };

  // (1a) decide() on the full fleet's inputs, without and with anti-affinity groups.
  const pure: Record<string, ReturnType<typeof dist>> = {};
  for (const [label, group] of [
    ['no groups', 0],
    ['groups of 10', 10],
  ] as const) {
    const runs: number[] = [];
    for (let i = 0; i < 7; i++) {
      const { memory, inputs } = haFleetInputs(hosts, VMS, victims.clean, Date.now(), group);
      const t0 = performance.now();
      const round1 = decide(memory, inputs);
      runs.push(performance.now() - t0);
      const moved = round1.actions.filter((a) => a.kind === 'assign').length;
      if (moved !== VMS) throw new Error(`decide placed ${moved} of the failed host's ${VMS} VMs (${label})`);
    }
    pure[label] = dist(runs.slice(2)); // the first rounds warm the JIT
    partial.decidePure = pure;
    console.log(`decide(), ${HOSTS} hosts x ${VMS} VMs, one failed (${label}): ${fmt(pure[label]!)}`);
  }

  // (3) The balancer's plan time, where its planner is on this branch (balance's src/controller/balance/plan.ts).
  let balance: Record<string, unknown> = {
    skipped: 'src/controller/balance/plan.ts is not on this branch yet',
  };
  const planPath = fileURLToPath(new URL('../src/controller/balance/plan.ts', import.meta.url));
  if (existsSync(planPath)) balance = await benchBalance(hosts, VMS);
  else console.log(`balancer: ${balance.skipped}`);
  partial.balance = balance;

  // The controller's part: a real etcd, the simulator, a controller and its API.
  const etcd = await startTestEtcd();
  onCleanup('etcd', () => etcd.close());
  const fit = vmsPerHostThatFit(
    {
      hosts: hosts.map((h) => ({ name: h, address: `unix://${dir}/sim/${h}.sock` })),
      heartbeatSeconds: HEARTBEAT,
      etcd: [etcd.endpoint],
    },
    VMS,
  );
  const vmsApplied = Math.min(VMS, fit);
  const note =
    vmsApplied < VMS
      ? `the applied spec carries ${vmsApplied} VMs per host, not ${VMS}: a spec of ${HOSTS * VMS} VMs is over the store's value limit`
      : undefined;
  if (note) console.log(`note: ${note}`);
  const t0 = performance.now();
  const sim = startSim(
    [
      '--count',
      String(HOSTS),
      '--dir',
      join(dir, 'sim'),
      '--etcd',
      etcd.endpoint,
      '--heartbeat',
      String(HEARTBEAT),
      '--own',
      victims.power,
    ],
    SIM_LOG,
  );
  onCleanup('simulator', async () => {
    if (sim.proc.exitCode !== null) return;
    sim.send('quit');
    await new Promise((r) => sim.proc.once('exit', r));
  });
  const ready = await sim.next();
  if (!ready.ready || ready.held !== HOSTS)
    throw new Error(`the simulator did not start with every lease held: ${JSON.stringify(ready)}`);
  const startS = round((performance.now() - t0) / 1000, 1);
  partial.simulator = { startS, rssBytesAtStart: ready.rssBytes };
  console.log(
    `simulator: ${HOSTS} hosts serving and holding leases after ${startS} s; RSS ${round(Number(ready.rssBytes) / 1048576, 0)} MiB`,
  );

  const client = etcdClient({ endpoints: [etcd.endpoint] });
  onCleanup('etcd client', () => client.close());
  const store = new EtcdStore(client);
  const coordination = new EtcdCoordination(client, { heartbeatSeconds: HEARTBEAT });
  onCleanup('coordination', () => coordination.close());
  const rounds: Array<{ ms: number; decisions: number }> = [];
  const timed: DecideFn = (memory, inputs) => {
    const s = performance.now();
    const r = decide(memory, inputs);
    rounds.push({ ms: performance.now() - s, decisions: r.decisions.length });
    return r;
  };
  const controller = new Controller(store, new RecordingRunner(), {
    coordination,
    etcdAuth: false,
    decide: timed,
  });
  const text = fleetSpecText({
    hosts: hosts.map((h) => ({ name: h, address: `unix://${dir}/sim/${h}.sock` })),
    vmsPerHost: vmsApplied,
    heartbeatSeconds: HEARTBEAT,
    etcd: [SPEC_ETCD],
  });
  const ta = performance.now();
  const progress: string[] = [];
  // The apply's timeline (its progress lines, stamped), for where the time went.
  const timelineFile = join(tmpdir(), `vmlink-flt-apply-${process.pid}.log`);
  // An apply that failed part-way converges when applied again (as an operator would): on this loaded machine the
  // controller's 1,000 hosts' steps at once can outrun etcd's 3 s request deadline.
  let attempts = 0;
  for (;;) {
    attempts++;
    try {
      await controller.apply(text, 'fleet.yaml', {
        progress: (m) =>
          progress.push(`+${round((performance.now() - ta) / 1000, 1)} s ${m.split('\n')[0]!.slice(0, 160)}`),
        signal: new AbortController().signal,
      });
      break;
    } catch (e) {
      writeFileSync(timelineFile, `${progress.join('\n')}\n`);
      if (attempts >= 4) throw e;
      console.log(
        `apply attempt ${attempts} failed (${(e as Error).message.split('\n')[0]!.slice(0, 300)}); applying again`,
      );
    }
  }
  const applyS = round((performance.now() - ta) / 1000, 1);
  Object.assign(partial, { applyS, applyAttempts: attempts, vmsPerHostApplied: vmsApplied });
  writeFileSync(timelineFile, `${progress.join('\n')}\n`);
  console.log(`apply timeline: ${timelineFile}`);
  console.log(
    `apply: ${HOSTS} hosts, ${HOSTS * vmsApplied} VMs placed, created and started in ${applyS} s (${attempts} attempt(s))`,
  );
  sim.send('rss');
  const rss = await sim.next();
  const rssPerHostKiB = round(Number(rss.rssBytes) / HOSTS / 1024, 0);
  const applyLoop = rss.loopDelayMs as { p50: number; p99: number; max: number };
  console.log(
    `simulator RSS with every VM: ${round(Number(rss.rssBytes) / 1048576, 0)} MiB = ${rssPerHostKiB} KiB per host; ${String(rss.held)} of ${HOSTS} leases held after the apply; the agents' event loop delay during start and apply p50 ${applyLoop.p50} ms, p99 ${applyLoop.p99} ms, max ${applyLoop.max} ms (leases are kept on their own thread)`,
  );
  partial.simulator = {
    startS,
    rssBytes: rss.rssBytes,
    rssPerHostKiB,
    heldAfterApply: rss.held,
    agentLoopDelayMsStartAndApply: applyLoop,
  };

  // (4) API latency.
  const tasks = new TaskManager();
  const api = await createControllerApi(controller, tasks);
  const sock = join(dir, 'ctl.sock');
  await listen(api, `unix://${sock}`);
  onCleanup('controller API', () => api.close());
  const http = new HttpClient(`unix://${sock}`, {
    protocol: 'api',
    maxResponseBytes: 512 * 1024 * 1024,
    timeoutMs: 300_000,
  });
  // As the daemon runs them: the heartbeat monitor and the report cache's refresher (one round per heartbeat), so
  // that `status` and `vm list` are served from each host's kept report; `?live=true` asks every agent, as before.
  const monitor = new Monitor(store, async () => (await controller.currentSpec())?.spec, {
    intervalMs: HEARTBEAT * 1000,
  });
  monitor.start();
  controller.reports.start(HEARTBEAT * 1000);
  const stopReads = () => {
    monitor.stop();
    controller.reports.stop();
  };
  onCleanup('monitor and report cache', async () => stopReads());
  const tw = performance.now();
  for (;;) {
    const health = Object.values(await hostHealth(store));
    if (controller.reports.lastRound && health.filter((h) => h.state === 'up').length >= HOSTS) break;
    if (performance.now() - tw > 600_000)
      throw new Error('the monitor and the report cache did not warm up in 10 min');
    await sleep(500);
  }
  const warmS = round((performance.now() - tw) / 1000, 1);
  console.log(`report cache warm after ${warmS} s (first round ${controller.reports.lastRound?.ms} ms)`);
  // `status` answers each host's report summary; `status --full` the whole reports (the answer before the summary).
  const series = ['status', 'status --full', 'status --live', 'vm list', 'vm list --live'] as const;
  const lat: Record<(typeof series)[number], number[]> = {
    status: [],
    'status --full': [],
    'status --live': [],
    'vm list': [],
    'vm list --live': [],
  };
  const paths = {
    status: '/v1/status',
    'status --full': '/v1/status?full=true',
    'status --live': '/v1/status?live=true',
    'vm list': '/v1/vms',
    'vm list --live': '/v1/vms?live=true',
  };
  const ages: number[] = [];
  const failures: string[] = [];
  // This process runs the controller (API, monitor, refresher, HA manager): how long its event loop stalls decides
  // whether its own etcd requests meet their deadline (a stall of 3 s fails them, and the client's breaker then fails
  // the next ones for a second).
  const apiLoop = monitorEventLoopDelay({ resolution: 20 });
  apiLoop.enable();
  const profiler = CPU_PROF_DIR ? new inspector.Session() : undefined;
  if (profiler) {
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.start');
  }
  const refreshRounds: number[] = [];
  /** Each answer's size in bytes (of JSON), from the last round of samples. */
  const answerBytes: Record<string, number> = {};
  let served = { reachable: 0, cached: 0 };
  for (let i = 0; i < SAMPLES; i++)
    for (const label of series) {
      const s = performance.now();
      // On this shared machine etcd can miss its deadline under the controller's reads: counted, not fatal.
      const body = await http.get(paths[label], AnyAnswerSchema).catch((e: unknown) => {
        failures.push(`${label}: ${(e as Error).message.split('\n')[0]!.slice(0, 200)}`);
        return undefined;
      });
      // After a failure, past the etcd client's open breaker (1 s), so that one failure is not counted again and again.
      if (body === undefined) {
        await sleep(2_000);
        continue;
      }
      lat[label].push(performance.now() - s);
      if (i === SAMPLES - 1) answerBytes[label] = Buffer.byteLength(JSON.stringify(body));
      if (label === 'status') {
        const hs = (body as { hosts: Array<{ reachable: boolean; reportAgeMs?: number }> }).hosts;
        served = {
          reachable: hs.filter((h) => h.reachable).length,
          cached: hs.filter((h) => (h.reportAgeMs ?? 0) > 0).length,
        };
        ages.push(Math.max(...hs.map((h) => h.reportAgeMs ?? 0)));
      }
      if (controller.reports.lastRound) refreshRounds.push(controller.reports.lastRound.ms);
    }
  stopReads();
  apiLoop.disable();
  if (profiler && CPU_PROF_DIR) {
    const { profile } = await profiler.post('Profiler.stop');
    profiler.disconnect();
    mkdirSync(CPU_PROF_DIR, { recursive: true });
    writeFileSync(join(CPU_PROF_DIR, 'controller-api.cpuprofile'), JSON.stringify(profile));
    console.log(`CPU profile of the API phase: ${join(CPU_PROF_DIR, 'controller-api.cpuprofile')}`);
  }
  const controllerLoopDelayMs = loopDist(apiLoop);
  const apiDist = {
    status: dist(lat.status),
    statusFull: dist(lat['status --full']),
    statusLive: dist(lat['status --live']),
    vmList: dist(lat['vm list']),
    vmListLive: dist(lat['vm list --live']),
    answerBytes,
    oldestReportAgeMs: dist(ages),
    refreshRoundMs: dist([...new Set(refreshRounds)]),
    warmS,
    lastStatus: served,
    failures,
    controllerLoopDelayMs,
    load: load1(),
  };
  partial.api = apiDist;
  for (const label of series)
    console.log(
      `API ${label} (${paths[label]}): ${fmt(dist(lat[label]))}; answer ${round((answerBytes[label] ?? 0) / 1e6, 2)} MB`,
    );
  console.log(
    `the controller's event loop delay while sampling: p50 ${controllerLoopDelayMs.p50} ms, p99 ${controllerLoopDelayMs.p99} ms, max ${controllerLoopDelayMs.max} ms`,
  );
  console.log(
    `${failures.length} request(s) failed${failures.length ? `: ${failures.join(' | ')}` : ''}; cached status: ${served.reachable} of ${HOSTS} hosts reachable, ${served.cached} served from the cache; oldest report per answer ${fmt(apiDist.oldestReportAgeMs)}; refresh rounds ${fmt(apiDist.refreshRoundMs)}; load ${apiDist.load}`,
  );

  // (2) End-to-end: the HA manager reacting to a failed host.
  const ha = controller.haManager()!;
  ha.start();
  onCleanup('HA manager', () => ha.stop());
  await sleep(3_500); // targets must have held their lease TARGET_LEASE_MIN_AGE_MS as this controller sees them
  const reactions: Record<string, unknown> = {};
  for (const how of ['clean', 'power'] as const) {
    const victim = victims[how];
    const names = Array.from({ length: vmsApplied }, (_, i) => vmName(victim, i));
    const before = rounds.length;
    sim.send(`fail ${victim} ${how}`);
    const failed = await sim.next();
    if (!failed.ok) throw new Error(`fail ${victim}: ${JSON.stringify(failed)}`);
    const at = Number(failed.at);
    const deadline = Date.now() + 120_000 + HEARTBEAT * 4_000;
    let times: ReturnType<typeof parseHaTimes>[] = [];
    const pollFailures: string[] = [];
    for (;;) {
      // The bench's own look at the events: a read past etcd's deadline (this loaded process) is retried, not fatal.
      const all = await store.events(1000).catch((e: unknown) => {
        pollFailures.push((e as Error).message.split('\n')[0]!.slice(0, 200));
        return undefined;
      });
      if (all === undefined) {
        if (Date.now() > deadline) throw new Error(`the HA events could not be read: ${pollFailures.at(-1)}`);
        await sleep(2_000);
        continue;
      }
      const evs = all.filter((e) => e.kind === 'ha.started');
      times = names.flatMap((n) => {
        const e = evs.find((x) => x.message.includes(`vm ${n} on`));
        return e ? [parseHaTimes(e.message)] : [];
      });
      if (times.length === names.length) break;
      if (Date.now() > deadline)
        throw new Error(
          `only ${times.length} of ${victim}'s ${names.length} VMs restarted within the deadline`,
        );
      await sleep(200);
    }
    const detected = Math.min(...times.map((t) => t.detected ?? Number.NaN)) - at;
    const assigned = Math.max(...times.map((t) => t.assigned ?? Number.NaN)) - at;
    const started = Math.max(...times.map((t) => t.started ?? Number.NaN)) - at;
    const acting = rounds.slice(before).filter((r) => r.decisions > 0);
    reactions[how] = {
      victim,
      vms: names.length,
      detectedMs: detected,
      allAssignedMs: assigned,
      allStartedMs: started,
      decideMsOfActingRounds: acting.map((r) => round(r.ms, 1)),
      ...(pollFailures.length ? { eventReadsFailed: pollFailures.length } : {}),
    };
    console.log(
      `HA, ${how} failure of ${victim} (${names.length} VMs): detected +${detected} ms, all assigned +${assigned} ms, all started +${started} ms; decide() in the acting rounds ${acting.map((r) => `${round(r.ms, 1)} ms`).join(', ')}`,
    );
  }
  const managerRounds = dist(rounds.map((r) => r.ms));
  console.log(
    `decide() in every manager round (${HOSTS} hosts, ${HOSTS * vmsApplied} VMs): ${fmt(managerRounds)}`,
  );
  const worst = Math.max(pure['no groups']!.max, pure['groups of 10']!.max, managerRounds.max);
  console.log(
    `target: decisions for ${HOSTS} hosts <= ${TARGET_DECIDE_MS} ms: worst ${round(worst, 1)} ms = ${round(worst / TARGET_DECIDE_MS, 3)} x the target`,
  );
  console.log(`machine: ${info.cpuModel}, ${info.cores} cores; load ${load1()}`);
  writeFileSync(
    RESULTS,
    `${JSON.stringify(
      {
        at: new Date().toISOString(),
        machine: info,
        hosts: HOSTS,
        vmsPerHost: VMS,
        vmsPerHostApplied: vmsApplied,
        ...(note ? { note } : {}),
        heartbeatSeconds: HEARTBEAT,
        decidePure: pure,
        decideManagerRounds: managerRounds,
        reactions,
        balance,
        api: apiDist,
        simulator: partial.simulator,
        applyS,
        applyAttempts: attempts,
      },
      null,
      1,
    )}\n`,
  );
  await ha.stop();
}

/** The balancer's plan time on the fleet with skewed loads (imported only where the planner exists). */
async function benchBalance(hosts: string[], vmsPerHost: number): Promise<Record<string, unknown>> {
  const modPath = '../src/controller/balance/plan.js';
  const mod = (await import(modPath)) as { planBalance: (input: unknown) => { moves: unknown[] } };
  const vms = hosts.flatMap((h, hi) =>
    Array.from({ length: vmsPerHost }, (_, i) => ({
      name: vmName(h, i),
      host: h,
      cpus: 1,
      memoryMiB: 512,
      // A skewed fleet: every tenth host runs hot.
      cpuBusy: hi % 10 === 0 ? 0.9 : 0.1,
    })),
  );
  const input = {
    hosts: hosts.map((h, hi) => ({
      name: h,
      cpus: 64,
      memoryMiB: 256 * 1024,
      cpuBusy: vmsPerHost * (hi % 10 === 0 ? 0.9 : 0.1),
      memoryUsedMiB: vmsPerHost * 512,
    })),
    vms,
  };
  const runs: number[] = [];
  let moves = 0;
  for (let i = 0; i < 5; i++) {
    const s = performance.now();
    moves = mod.planBalance(input).moves.length;
    runs.push(performance.now() - s);
  }
  const d = dist(runs.slice(1));
  console.log(
    `balancer plan, ${hosts.length} hosts x ${vmsPerHost} VMs (every tenth host hot): ${fmt(d)}; ${moves} moves`,
  );
  return { ...d, moves };
}

process.on('SIGINT', () => void runCleanups().then(() => process.exit(130)));
main()
  .then(async () => {
    await runCleanups();
    // A run that ended well leaves nothing behind; a failed one keeps the simulator's log to read.
    rmSync(SIM_LOG, { force: true });
  })
  .catch(async (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    writePartial(e);
    await runCleanups();
    console.error(`the simulator's log is kept: ${SIM_LOG}`);
    process.exit(1);
  });
