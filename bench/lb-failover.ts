// Load-balancer VIP failover (issue 15), on the guest-less testbed of test/helpers/lb-testbed.ts (real HAProxy,
// Keepalived, bridges and nftables in namespaces `lbv-*`; two backends; a client looping HTTP requests to the VIP,
// each with a 300 ms budget, 20 ms apart). Per run: the loop starts, 1 s later the VIP holder is hit, then:
//   (1) SIGKILL of its HAProxy and Keepalived (the VRRP child first: no goodbye advertisement), or
//   (2) SIGKILL of its HAProxy alone (Keepalived's track script puts it in FAULT: the VIP must move too).
// Measured: ms from the kill until the other host holds the VIP, failed requests, and how long failures lasted
// (first failed request's start to last failed request's end). The killed host is repaired (`ensure`) before the
// next run; nopreempt keeps the VIP where it went, so runs alternate hosts. Target (issue): <= 3 s of failures.
//   npx tsx bench/lb-failover.ts [--repeat N]       (root; writes bench/results/lb-failover.json)
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Host, LbTestbed, type LoopResult } from '../test/helpers/lb-testbed.js';
import { hostInfo, load1, median, numArg, onCleanup, runCleanups } from './lib.js';

const repeat = numArg('--repeat', 5);
/** Each request's budget in the loop: a failed request ends at most this long after it started. */
const REQUEST_BUDGET_MS = 300;
const TARGET_MS = 3000;

interface Run {
  movedMs: number | null;
  failed: number;
  total: number;
  /** First failed request's start to last failed request's end (0 when none failed). */
  failingMs: number;
  answeredBy: Record<string, number>;
}

const failingMs = (r: LoopResult) =>
  r.firstFailMs === null ? 0 : (r.lastFailMs ?? r.firstFailMs) - r.firstFailMs + REQUEST_BUDGET_MS;

const summary = (label: string, runs: Run[]) => {
  const moved = runs.flatMap((r) => (r.movedMs === null ? [] : [r.movedMs]));
  const failing = runs.map((r) => r.failingMs);
  const failed = runs.map((r) => r.failed);
  return {
    label,
    runs,
    movedMs: { median: moved.length ? median(moved) : null, max: moved.length ? Math.max(...moved) : null },
    failingMs: { median: median(failing), max: Math.max(...failing) },
    failedRequests: { median: median(failed), max: Math.max(...failed) },
    notMoved: runs.length - moved.length,
    withinTarget: runs.every((r) => r.movedMs !== null && r.failingMs <= TARGET_MS),
  };
};

async function main(): Promise<void> {
  const bed = new LbTestbed('lbv');
  onCleanup('lb testbed', () => bed.close());
  await bed.open();
  const scenarios: { label: string; keepalived: boolean }[] = [
    { label: 'HAProxy + Keepalived killed', keepalived: true },
    { label: 'HAProxy alone killed', keepalived: false },
  ];
  const results = [];
  const loads: number[] = [];
  for (const s of scenarios) {
    const runs: Run[] = [];
    for (let i = 0; i < repeat; i++) {
      const from = (await bed.settled(15_000)) as Host | undefined;
      if (!from) throw new Error(`run ${i + 1} of "${s.label}": no single VIP holder with both backends up`);
      loads.push(load1());
      const r = await bed.failover(from, () => bed.kill(from, s.keepalived), { loopMs: 5000, leadMs: 1000 });
      const run: Run = {
        movedMs: r.movedMs ?? null,
        failed: r.result.failed,
        total: r.result.total,
        failingMs: failingMs(r.result),
        answeredBy: r.result.bodies,
      };
      runs.push(run);
      console.log(
        `${s.label} #${i + 1} (${from}): VIP moved in ${run.movedMs ?? 'NEVER'} ms; ${run.failed} of ${run.total} requests failed over ${run.failingMs} ms`,
      );
      await bed.ensure(from);
    }
    results.push(summary(s.label, runs));
  }
  const info = hostInfo();
  console.log('');
  console.log(
    `LB failover (${repeat} runs each; VRRP advert 0.5 s, HAProxy checks 200 ms; requests 300 ms budget, 20 ms apart)`,
  );
  console.log(`machine: ${info.cpuModel}, ${info.cores} cores; load ${loads.join(' ')}`);
  for (const r of results)
    console.log(
      `${r.label.padEnd(30)} VIP moved median ${r.movedMs.median} ms max ${r.movedMs.max} ms; failures lasted median ${r.failingMs.median} ms max ${r.failingMs.max} ms; failed requests median ${r.failedRequests.median} max ${r.failedRequests.max}; ${r.withinTarget ? `within the ${TARGET_MS} ms target` : `NOT within the ${TARGET_MS} ms target`}`,
    );
  writeFileSync(
    fileURLToPath(new URL('./results/lb-failover.json', import.meta.url)),
    `${JSON.stringify({ at: new Date().toISOString(), repeat, targetMs: TARGET_MS, machine: info, results }, null, 1)}\n`,
  );
  await runCleanups();
}

process.on('SIGINT', () => void runCleanups().then(() => process.exit(130)));
main().catch(async (e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  await runCleanups();
  process.exit(1);
});
