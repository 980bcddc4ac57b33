// `npm run bench [-- --only a,b,c] [--repeat N]`: vmlink vs the raw commands reaching the same end state,
// measured side by side in one run (see bench/README.md). Must run as root; builds everything in its own
// namespaces (or a lab) and removes it all, also on failure or Ctrl-C.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type ApplyPortsResult, benchApplyPorts } from './apply-ports.js';
import { benchCli, type CliResult } from './cli.js';
import { hostInfo, load1, round, runCleanups, secs, since } from './lib.js';
import { benchOverlays, benchVerify, type OverlaysResult, type VerifyBenchResult } from './multihost.js';
import { benchStore, printStore, type StoreBenchResult, storeSummary } from './store.js';
import { benchVmStart, type VmStartResult } from './vm-start.js';

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), 'results', 'latest.json');
const ALL = ['a', 'b', 'c', 'd', 'e', 'f', 'g'] as const;
/** What `npm run bench` runs without --only: every bench. */
const DEFAULT = ALL;
type BenchId = (typeof ALL)[number];

function parseCli(): { only: Set<BenchId>; repeat: number } {
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      repeat: { type: 'string', default: '3' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log('usage: npm run bench -- [--only a,b,c,d,e,f,g] [--repeat N]   (root; see bench/README.md)');
    process.exit(0);
  }
  const only = new Set<BenchId>();
  for (const x of (values.only ?? DEFAULT.join(',')).split(',').map((s) => s.trim())) {
    if (!(ALL as readonly string[]).includes(x))
      throw new Error(`--only: unknown bench ${x} (a, b, c, d, e, f or g)`);
    only.add(x as BenchId);
  }
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error(`--repeat: ${values.repeat} is not a count`);
  return { only, repeat };
}

function printProfile(p: ApplyPortsResult['profile']): void {
  const show = (title: string, a: ApplyPortsResult['profile']['apply']) => {
    console.log(
      `  ${title}: ${secs(a.wallMs)} wall; agent ran ${a.execCount} commands taking ${secs(a.execMs)} (${Math.round((100 * a.execMs) / a.wallMs)}% of wall)`,
    );
    for (const ph of a.phases)
      console.log(
        `    ${ph.phase.padEnd(28)} ${String(ph.count).padStart(4)}x  ${secs(ph.wallMs).padStart(8)}  mean ${String(ph.meanMs).padStart(7)} ms  commands ${String(ph.execs).padStart(5)} (${secs(ph.execMs)})${ph.spawns ? `  spawns ${ph.spawns}` : ''}${ph.count >= 20 ? `  first 10 ${ph.first10MeanMs} ms, last 10 ${ph.last10MeanMs} ms` : ''}`,
      );
    if (a.dnsmasqWait)
      console.log(
        `    dnsmasq spawn -> next command (pidfile wait): mean ${a.dnsmasqWait.meanMs} ms (${a.dnsmasqWait.minMs}-${a.dnsmasqWait.maxMs}) over ${a.dnsmasqWait.count}`,
      );
    console.log('    top commands (count, total, mean):');
    for (const c of a.commands)
      console.log(
        `      ${String(c.count).padStart(5)}x ${secs(c.totalMs).padStart(8)} ${String(c.meanMs).padStart(6)} ms  ${c.cmd}`,
      );
  };
  show('apply (b, last repeat)', p.apply);
  show('no-op re-apply (c, last repeat)', p.noop);
  if (p.destroy) show('destroy (after b, last repeat)', p.destroy);
  console.log(`  agent HTTP round trip (GET /v1/health, median of 30): ${p.httpHealthRoundTripMs} ms`);
  if (p.dnsmasqAloneStartMs.length)
    console.log(
      `  one dnsmasq started alone until its pidfile (raw, polled every 1 ms): ${p.dnsmasqAloneStartMs.map((x) => Math.round(x)).join(', ')} ms`,
    );
}

/** The results file as it is, to merge a partial run into; empty when absent or unreadable. */
function readPrevious(): Record<string, unknown> & { summary?: unknown; runs?: unknown } {
  if (!existsSync(RESULTS)) return {};
  try {
    return JSON.parse(readFileSync(RESULTS, 'utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}

function printOverlays(d: OverlaysResult, say: (s: string) => void): void {
  say(
    `  vmlink: ${d.vmlink.runsMs.map((x) => secs(x)).join(', ')} (median ${secs(d.vmlink.medianMs)}); raw: ${d.raw.runsMs.map((x) => secs(x, 3)).join(', ')} (median ${secs(d.raw.medianMs, 3)}); ratio vmlink/raw ${d.ratio} (per repeat ${d.pairedRatios.join(', ')})`,
  );
  const fmt = (c: OverlaysResult['endState']['raw'][string]) =>
    `${c.bridges} bridges (${c.bridgesUp} up), ${c.vxlan} vxlan (${c.vxlanAsDriver} enslaved/up/nolearning/4789/local/dev eth0), ${c.fdbFlood} flood FDB entries, ${c.mtu1450} devices at mtu 1450`;
  for (const side of ['vmlink', 'raw'] as const)
    for (const [h, c] of Object.entries(d.endState[side]))
      say(`  end state ${side.padEnd(6)} ${h}: ${fmt(c)}`);
  say(`  end states equivalent: ${d.endState.equivalent ? 'yes' : 'NO'}`);
  say(`  (d2) ovs backend: ${d.d2.why}`);
  const p = d.profile;
  say(
    '\nwhere vmlink spends its (d) apply time (last repeat; agents at VMLINK_LOG=debug: every command with duration)',
  );
  say(
    `  apply: ${secs(p.wallMs)} wall for ${d.steps} steps (each host's in one request, the hosts side by side); the agents ran ${p.execCount} commands taking ${secs(p.execMs)} (${Math.round((100 * p.execMs) / p.wallMs)}% of wall)`,
  );
  for (const ph of p.phases)
    say(
      `    ${ph.phase.padEnd(30)} ${String(ph.count).padStart(4)}x ${secs(ph.wallMs).padStart(8)}  mean ${String(ph.meanMs).padStart(6)} ms  commands ${String(ph.execs).padStart(5)} (${secs(ph.execMs)}, ${round(ph.execs / ph.count, 1)}/step)${ph.count >= 20 ? `  first 10 ${ph.first10MeanMs} ms, last 10 ${ph.last10MeanMs} ms` : ''}`,
    );
  for (const [h, x] of Object.entries(p.perHost))
    say(`    ${h}: ${x.steps} steps, ${secs(x.wallMs)} wall, ${x.execs} commands (${secs(x.execMs)})`);
  say(`    plan + the slowest host's requests: ${secs(p.hostsConcurrentEstimateMs)}`);
  say('    top commands (count, total, mean):');
  for (const c of p.commands)
    say(
      `      ${String(c.count).padStart(5)}x ${secs(c.totalMs).padStart(8)} ${String(c.meanMs).padStart(6)} ms  ${c.cmd}`,
    );
  say(
    `  agent HTTP round trip through the lab relay (GET /v1/health, median of 20): ${p.httpHealthRoundTripMs} ms`,
  );
  const x = d.destroyProfile;
  say(
    `  destroy (untimed in the ratio, last repeat): ${secs(x.wallMs)} wall; the agents ran ${x.execCount} commands taking ${secs(x.execMs)}; top commands:`,
  );
  for (const c of x.commands.slice(0, 6))
    say(
      `      ${String(c.count).padStart(5)}x ${secs(c.totalMs).padStart(8)} ${String(c.meanMs).padStart(6)} ms  ${c.cmd}`,
    );
}

function printVerify(e: VerifyBenchResult, say: (s: string) => void): void {
  const r0 = e.verify.runs[0];
  say(
    `  verify: ${e.verify.runsMs.map((x) => secs(x)).join(', ')} (median ${secs(e.verify.medianMs)}); reference ${e.reference.pings} pings: ${e.reference.runsMs.map((x) => secs(x)).join(', ')} (median ${secs(e.reference.medianMs)}, ${e.reference.perPingMs} ms each); ratio verify/reference ${e.ratio}, ICMP phase only ${e.icmpRatio}`,
  );
  if (r0) say(`  ${r0.endpoints} endpoints, ${r0.cells} cells; cells by source kind:`);
  for (const [k, v] of Object.entries(e.cellsBySource))
    say(
      `    ${k.padEnd(9)} ${String(v.cells).padStart(3)} cells: ${v.observedTrue} reachable, ${v.observedFalse} not`,
    );
  say('  probes outside verify (wall time, median of 5):');
  for (const [k, v] of Object.entries(e.probeCostMs)) say(`    ${String(v).padStart(7)} ms  ${k}`);
  say(
    `  around (untimed): lab up ${secs(e.around.labUpMs)}, apply ${secs(e.around.applyMs)}, guests addressed ${secs(e.around.guestsReadyMs)} later, destroy ${secs(e.around.destroyMs)}, lab down ${secs(e.around.labDownMs)}`,
  );
}

async function main(): Promise<void> {
  const started = performance.now();
  if (process.getuid?.() !== 0) throw new Error('the benchmarks need root (namespaces, taps, QEMU launcher)');
  const { only, repeat } = parseCli();
  const host = hostInfo();
  const say = (s: string) => console.log(s);
  say(`vmlink benchmarks, ${new Date().toISOString()}`);
  say(`  cpu: ${host.cpuModel}, ${host.cores} cores; accelerator: ${host.accelerator}`);
  say(`  kernel ${host.kernel}, ${host.qemu}, node ${host.node}`);
  say(
    `  load average at start: ${host.loadavgAtStart.join(' ')}; repeats: ${repeat} (sides alternate per repeat)`,
  );

  // The CLI, the controller and the lab's agents run the compiled dist/: build it when src/ is newer.
  execFileSync(process.execPath, [join(dirname(RESULTS), '../../scripts/build.mjs'), '--if-stale'], {
    stdio: 'inherit',
  });

  let a: VmStartResult | undefined;
  let bc: ApplyPortsResult | undefined;
  if (only.has('a')) {
    say('\n(a) VM start until the guest agent answers guest-sync');
    a = await benchVmStart({ repeat, say });
  }
  if (only.has('b') || only.has('c')) {
    say(`\n(b) apply 50 nat networks + 100 VM ports${only.has('b') ? '' : ' (vmlink side only, for (c))'}`);
    say('(c) no-op re-apply of the same spec');
    bc = await benchApplyPorts({ repeat, raw: only.has('b'), say });
    for (const [k, v] of Object.entries(bc.b.endState))
      say(
        `  end state (${k}): ${v.bridges} bridges (${v.bridgesWithAddr} addressed), ${v.taps} taps (${v.tapsAttached} attached), nft ${v.nftChains} chains/${v.nftRules} rules, ${v.dnsmasq} dnsmasq, ip_forward ${v.ipForward ? 'on' : 'off'}`,
      );
    say(
      '\nwhere vmlink spends its apply time (agent at VMLINK_LOG=debug: every command it ran, with duration)',
    );
    printProfile(bc.profile);
  }
  let d: OverlaysResult | undefined;
  let e: VerifyBenchResult | undefined;
  if (only.has('d')) {
    say('\n(d) apply 3 hosts x 20 vxlan overlays (linux backend, VNIs 2001..2020, no VMs, no gateway)');
    d = await benchOverlays({ repeat, say });
    printOverlays(d, say);
  }
  if (only.has('e')) {
    say('\n(e) verify matrix: 3 hosts x 6 test-guest VMs on one overlay (NAT gateway on host1), one peer');
    e = await benchVerify({ repeat, say });
    printVerify(e, say);
  }
  let f: CliResult | undefined;
  if (only.has('f')) {
    say('\n(f) CLI latency: wall time of `vmlink` (bin/vmlink.js -> dist/) from spawn to exit, median of 5');
    f = await benchCli({ say });
  }

  let g: StoreBenchResult | undefined;
  if (only.has('g')) {
    say('\n(g) store operations, N of each: embedded SQLite vs etcd (one local member)');
    g = await benchStore({ repeat, say });
    printStore(g, say);
  }

  const lines: string[] = [];
  if (a)
    lines.push(
      `(a) vm start to guest agent: vmlink ${secs(a.vmlink.medianMs, 1)}, raw qemu ${secs(a.raw.medianMs, 1)}, ratio ${a.ratio.toFixed(2)}; user path (vmlink apply + vm exec) ${secs(a.userPath.medianMs, 1)}, ratio ${a.userPath.ratio.toFixed(2)}`,
    );
  if (bc && only.has('b') && bc.b.raw)
    lines.push(
      `(b) apply 50 nets/100 ports: vmlink ${secs(bc.b.vmlink.medianMs, 1)}, raw ${secs(bc.b.raw.medianMs, 1)}, ratio ${bc.b.ratio!.toFixed(2)}`,
    );
  if (bc && only.has('c'))
    lines.push(`(c) no-op re-apply: ${secs(bc.c.noop.medianMs)}, ${bc.c.ofB.toFixed(2)} of (b)`);
  if (d)
    lines.push(
      `(d) apply 3 hosts x 20 overlays: vmlink ${secs(d.vmlink.medianMs, 1)}, raw ${secs(d.raw.medianMs, 3)}, ratio ${d.ratio.toFixed(1)}; end states ${d.endState.equivalent ? 'equivalent' : 'DIFFER'}`,
    );
  if (e)
    lines.push(
      `(e) verify 3 hosts x 6 VMs (${e.verify.runs[0]?.cells ?? 0} cells): ${secs(e.verify.medianMs, 1)}, reference ${e.reference.pings} pings ${secs(e.reference.medianMs, 2)}, ratio ${e.ratio.toFixed(1)}`,
    );
  if (f)
    lines.push(
      `(f) cli latency: --version ${secs(f.version.vmlink.medianMs)} (node -e 0 ${secs(f.version.raw.medianMs)}), status ${secs(f.status.vmlink.medianMs)} (http.get ${secs(f.status.raw.medianMs)}), no-op apply ${secs(f.noopApply.vmlink.medianMs)} (host read by hand ${secs(f.noopApply.raw.medianMs)})${f.noopApplyLarge ? `, no-op apply of (b)'s spec ${secs(f.noopApplyLarge.vmlink.medianMs)}` : ''}`,
    );
  if (g) lines.push(storeSummary(g));
  const totalMs = since(started);
  say(`\nsummary (medians of ${repeat}; ratio = vmlink / raw)`);
  for (const l of lines) say(`  ${l}`);
  say(`  whole bench: ${secs(totalMs, 0)}; load average at end: ${load1()}`);

  mkdirSync(dirname(RESULTS), { recursive: true });
  // A run of some benches keeps the others' results from the file (and their summary lines); `runs` says when
  // and how each bench last ran.
  const prev = readPrevious();
  const now = new Date().toISOString();
  const ran = [...only];
  const prevRuns = (prev.runs ?? {}) as Record<string, unknown>;
  const oldRuns: Record<string, unknown> = {};
  for (const id of ALL) {
    if (only.has(id)) continue;
    if (prevRuns[id]) oldRuns[id] = prevRuns[id];
    else if (prev[id])
      oldRuns[id] = { date: prev.date, repeat: prev.repeat, totalSeconds: prev.totalSeconds };
  }
  const keptLines = ((prev.summary ?? []) as string[]).filter((l) => {
    const id = /^\(([a-z])\)/.exec(l)?.[1];
    return id !== undefined && !only.has(id as BenchId) && prev[id] !== undefined;
  });
  const json = {
    ...prev,
    date: now,
    host,
    repeat,
    summary: [...keptLines, ...lines].sort(),
    totalSeconds: round(totalMs / 1000, 1),
    runs: {
      ...oldRuns,
      ...Object.fromEntries(
        ran.map((id) => [id, { date: now, repeat, totalSeconds: round(totalMs / 1000, 1) }]),
      ),
    },
    ...(a ? { a } : {}),
    ...(bc && only.has('b') ? { b: bc.b } : {}),
    ...(bc && only.has('c') ? { c: bc.c } : {}),
    ...(bc ? { profile: bc.profile } : {}),
    ...(d ? { d } : {}),
    ...(e ? { e } : {}),
    ...(f ? { f } : {}),
    ...(g ? { g } : {}),
  };
  writeFileSync(RESULTS, `${JSON.stringify(json, null, 2)}\n`);
  try {
    // Keep the committed file as `biome check` wants it (short arrays on one line).
    execFileSync('npx', ['biome', 'format', '--write', RESULTS], {
      cwd: join(dirname(RESULTS), '../..'),
      stdio: 'ignore',
    });
  } catch {
    // formatting is cosmetic
  }
  say(`  written to ${RESULTS}`);
}

let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    console.error(`\n${sig}: cleaning up ...`);
    void runCleanups().finally(() => process.exit(130));
  });
}

try {
  await main();
} catch (e) {
  console.error(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exitCode = 1;
} finally {
  await runCleanups();
}
