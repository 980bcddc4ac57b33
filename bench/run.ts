// `npm run bench [-- --only a,b,c] [--repeat N]`: vmlink vs the raw commands reaching the same end state,
// measured side by side in one run (see bench/README.md). Must run as root; builds everything in its own
// namespaces (or a lab) and removes it all, also on failure or Ctrl-C.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type ApplyPortsResult, benchApplyPorts } from './apply-ports.js';
import { hostInfo, load1, round, runCleanups, secs, since } from './lib.js';
import { benchVmStart, type VmStartResult } from './vm-start.js';

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), 'results', 'latest.json');
const ALL = ['a', 'b', 'c'] as const;
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
    console.log('usage: npm run bench -- [--only a,b,c] [--repeat N]   (root; see bench/README.md)');
    process.exit(0);
  }
  const only = new Set<BenchId>();
  for (const x of (values.only ?? ALL.join(',')).split(',').map((s) => s.trim())) {
    if (!(ALL as readonly string[]).includes(x)) throw new Error(`--only: unknown bench ${x} (a, b or c)`);
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
  console.log(`  agent HTTP round trip (GET /v1/health, median of 30): ${p.httpHealthRoundTripMs} ms`);
  if (p.dnsmasqAloneStartMs.length)
    console.log(
      `  one dnsmasq started alone until its pidfile (raw, polled every 1 ms): ${p.dnsmasqAloneStartMs.map((x) => Math.round(x)).join(', ')} ms`,
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

  const lines: string[] = [];
  if (a)
    lines.push(
      `(a) vm start to guest agent: vmlink ${secs(a.vmlink.medianMs, 1)}, raw qemu ${secs(a.raw.medianMs, 1)}, ratio ${a.ratio.toFixed(2)}`,
    );
  if (bc && only.has('b') && bc.b.raw)
    lines.push(
      `(b) apply 50 nets/100 ports: vmlink ${secs(bc.b.vmlink.medianMs, 1)}, raw ${secs(bc.b.raw.medianMs, 1)}, ratio ${bc.b.ratio!.toFixed(2)}`,
    );
  if (bc && only.has('c'))
    lines.push(`(c) no-op re-apply: ${secs(bc.c.noop.medianMs)}, ${bc.c.ofB.toFixed(2)} of (b)`);
  const totalMs = since(started);
  say(`\nsummary (medians of ${repeat}; ratio = vmlink / raw)`);
  for (const l of lines) say(`  ${l}`);
  say(`  whole bench: ${secs(totalMs, 0)}; load average at end: ${load1()}`);

  mkdirSync(dirname(RESULTS), { recursive: true });
  const json = {
    date: new Date().toISOString(),
    host,
    repeat,
    summary: lines,
    totalSeconds: round(totalMs / 1000, 1),
    ...(a ? { a } : {}),
    ...(bc && only.has('b') ? { b: bc.b } : {}),
    ...(bc && only.has('c') ? { c: bc.c } : {}),
    ...(bc ? { profile: bc.profile } : {}),
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
