// The cluster drills that left the integration suite (test/integration/ha-drills.int.test.ts keeps host-failure and
// partition, the drills whose invariants only a full lab shows), run on demand in a cluster lab of their own and
// checked as the test checked them, with their times:
//   (1) `vmlink drill controller-failure active --during-apply`, N times (default 2): the active controller killed
//       while an apply runs; a standby takes over (takeover time) and the next apply converges.
//   (2) `vmlink drill etcd-member-failure etcdK` for K = 1..3 (each member once; `--etcd M` rounds): one member
//       stopped for a lease's lifetime and more; every host keeps its lease, an apply (store writes) succeeds,
//       nothing moves, the member comes back (detection and first-write times).
// Exits 1 when any invariant fails, a drill leaves the lab unrestored, or a check of the former test fails.
//   npx tsx bench/ha-drills.ts [--takeovers N] [--etcd M]      (root; holds the VM lock; ~6 min on 2 cores)
// Covered elsewhere in CI meanwhile: controllers.int (SIGKILL of the active controller: the standby takes over and
// sees the state written before), lab-cluster.int (one etcd member stopped: quorum kept, it comes back healthy),
// drills/drill.test.ts (both drills' logic against fakes).
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DrillReport } from '../src/shared/cluster.js';
import { haLabSpec } from '../test/helpers/ha-lab.js';
import { acquireVmLock } from '../test/helpers/vmlock.js';
import { startCliLab, vmlink } from './cli.js';
import { hostInfo, load1, median, numArg, round, runCleanups, sleep } from './lib.js';

const takeovers = numArg('--takeovers', 2);
const etcdRounds = numArg('--etcd', 1);

const spec = (lab: string) => haLabSpec(lab, 95);

/** Where each VM runs, as the cluster reports it. */
async function placement(env: Record<string, string>): Promise<Record<string, string>> {
  const r = await vmlink(['vm', 'list', '--json'], env, 60_000);
  if (r.code !== 0) throw new Error(`vm list exited ${r.code}: ${r.stderr.trim()}`);
  const vms = JSON.parse(r.stdout) as Array<{ name: string; host: string }>;
  return Object.fromEntries(vms.map((v) => [v.name, v.host]));
}

async function main(): Promise<void> {
  const release = await acquireVmLock();
  const problems: string[] = [];
  const check = (ok: boolean, what: string) => {
    if (!ok) problems.push(what);
  };
  try {
    const lab = await startCliLab('hadr', spec);
    const file = lab.specFile('cluster.yaml', spec(lab.lab));
    const cluster = {
      ...lab.env,
      VMLINK_SOCKET: ['ctl1', 'ctl2']
        .map((c) => `${lab.env.VMLINK_RUN_DIR}/lab/${lab.lab}/${c}.sock`)
        .join(','),
    };
    const applied = await vmlink(['apply', '-f', file], cluster, 600_000);
    if (applied.code !== 0) throw new Error(`apply failed: ${applied.stderr.trim()}`);
    for (const vm of ['web', 'db']) {
      const deadline = Date.now() + 300_000;
      while ((await vmlink(['vm', 'exec', vm, '--', 'true'], cluster, 60_000)).code !== 0) {
        if (Date.now() > deadline) throw new Error(`the guest of ${vm} did not answer within 300 s`);
        await sleep(2_000);
      }
    }
    const drill = async (kind: string, target: string, ...more: string[]): Promise<DrillReport> => {
      const r = await vmlink(['drill', kind, target, '-f', file, ...more, '--json'], lab.env, 600_000);
      if (r.code !== 0 && r.code !== 1)
        throw new Error(`drill ${kind} ${target} exited ${r.code}: ${r.stderr.trim()}`);
      const report = JSON.parse(r.stdout) as DrillReport;
      const name = `${kind} ${target}`;
      for (const x of report.invariants.filter((x) => !x.ok))
        problems.push(`${name}: ${x.name}: ${x.detail}`);
      check(report.restored, `${name}: lab not restored: ${report.notes.join('; ')}`);
      console.log(
        `${name}: detected ${report.detectedS ?? '-'} s, takeover ${report.takeoverS ?? '-'} s; invariants ${report.invariants.map((x) => `${x.ok ? '✓' : '✗'}${x.name}`).join(' ')}`,
      );
      return report;
    };

    const takeover: number[] = [];
    const loads: number[] = [];
    for (let i = 0; i < takeovers; i++) {
      loads.push(load1());
      const r = await drill('controller-failure', 'active', '--during-apply');
      check((r.takeoverS ?? 0) > 0, `controller-failure ${i + 1}: no takeover time`);
      check(
        /next apply succeeded/.test(r.invariants.find((x) => x.name === 'converged')?.detail ?? ''),
        `controller-failure ${i + 1}: the next apply did not succeed`,
      );
      if (r.takeoverS !== undefined) takeover.push(r.takeoverS);
    }

    const detected: number[] = [];
    const firstWrite: number[] = [];
    for (let round_ = 0; round_ < etcdRounds; round_++)
      for (const member of ['etcd1', 'etcd2', 'etcd3']) {
        loads.push(load1());
        const before = await placement(cluster);
        const r = await drill('etcd-member-failure', member);
        const names: string[] = r.invariants.map((x) => x.name);
        for (const n of ['no-host-failed', 'store-writes', 'no-vm-twice', 'none-lost', 'converged'])
          check(names.includes(n), `etcd-member-failure ${member}: no ${n} invariant`);
        check(
          !/replaced during the drill/.test(r.notes.join('\n')),
          `etcd-member-failure ${member}: ${r.notes.join('; ')}`,
        );
        const after = await placement(cluster);
        check(
          JSON.stringify(after) === JSON.stringify(before),
          `etcd-member-failure ${member}: VMs moved: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`,
        );
        if (r.detectedS !== undefined) detected.push(r.detectedS);
        const w = /succeeded ([\d.]+) s after/.exec(
          r.invariants.find((x) => x.name === 'store-writes')?.detail ?? '',
        );
        if (w) firstWrite.push(Number(w[1]));
      }

    const info = hostInfo();
    const line = (label: string, v: number[]) =>
      v.length
        ? `${label.padEnd(44)} median ${round(median(v), 2).toFixed(2).padStart(6)} s   min ${Math.min(...v).toFixed(2)}  max ${Math.max(...v).toFixed(2)}`
        : `${label.padEnd(44)} no value`;
    console.log('');
    console.log(
      `cluster drills (${takeovers} controller-failure --during-apply, ${etcdRounds * 3} etcd-member-failure; 5 s heartbeats)`,
    );
    console.log(
      `machine: ${info.cpuModel}, ${info.cores} cores, ${info.accelerator}, QEMU ${info.qemu}; load ${loads.join(' ')}`,
    );
    console.log(line('controller killed -> standby active', takeover));
    console.log(line('etcd member stopped -> controllers see it', detected));
    console.log(line('etcd member stopped -> first apply succeeds', firstWrite));
    console.log(problems.length ? `problems:\n  ${problems.join('\n  ')}` : 'every invariant held');
    writeFileSync(
      fileURLToPath(new URL('./results/ha-drills.json', import.meta.url)),
      `${JSON.stringify({ at: new Date().toISOString(), takeovers, etcdRounds, machine: info, takeover, detected, firstWrite, problems }, null, 1)}\n`,
    );
    await lab.close();
  } finally {
    await runCleanups();
    await release();
  }
  if (problems.length) process.exitCode = 1;
}

process.on('SIGINT', () => void runCleanups().then(() => process.exit(130)));
main().catch(async (e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  await runCleanups();
  process.exit(1);
});
