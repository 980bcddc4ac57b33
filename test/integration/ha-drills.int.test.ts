// The lab tests, end to end through the real CLI, on ONE lab shared by the file: three hosts whose agents
// hold etcd leases (5 s heartbeats), a 3-member etcd with TLS and auth, two cluster controllers, two small TCG guests
// under `ha: started`. Each drill runs on the controller that brought the lab up and measures from outside (/proc
// every 100 ms): a host killed -> its VM runs elsewhere and its guest answers; a host cut off -> it stops its VMs
// and the others start them, never both. Each drill restores the lab; the next one starts from a healthy cluster.
// The controller-failure (during an apply) and etcd-member-failure drills run in bench/ha-drills.ts, with their
// times and the checks this file made of them; in CI their invariants are covered by controllers.int (SIGKILL of the
// active controller: a standby takes over and sees the state written before), lab-cluster.int (one etcd member
// stopped: quorum kept, it comes back healthy) and drills/drill.test.ts (both drills' logic against fakes).
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DrillReport } from '../../src/shared/cluster.js';
import { cliJson, runCli } from '../helpers/cli.js';
import { haLabSpec } from '../helpers/ha-lab.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'ithd';
const root = mkdtempSync('/tmp/vmlink-ithd-');
chmodSync(root, 0o755);
const run = join(root, 'run');
/** The controller that brings the lab up and runs the drills (SQLite, outside the lab). */
const env = {
  VMLINK_RUN_DIR: run,
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(run, 'controller.sock'),
};
/** The cluster's controllers, through their sockets (the CLI finds the active one). */
const clusterEnv = {
  ...env,
  VMLINK_SOCKET: ['ctl1', 'ctl2'].map((c) => join(run, 'lab', LAB, `${c}.sock`)).join(','),
};
const file = join(root, 'cluster.yaml');
const SPEC = haLabSpec(LAB, 93);
let release: (() => Promise<void>) | undefined;

/** Runs a drill through the CLI and returns its report (exit 1 = an invariant failed: the report still comes). */
async function drill(kind: string, target: string, ...more: string[]): Promise<DrillReport> {
  const r = await runCli(['drill', kind, target, '-f', file, ...more, '--json'], env, 300_000);
  expect([0, 1], r.stderr + r.stdout).toContain(r.code);
  const report = JSON.parse(r.stdout) as DrillReport;
  // Printed for the closing note: the measured times of every drill.
  console.log(`${kind} ${target}: ${JSON.stringify(report, null, 1)}`);
  return report;
}

/** Where each VM runs now, as the cluster reports it. */
async function placement(): Promise<Record<string, string>> {
  const vms = await cliJson<Array<{ name: string; host: string; observed?: { state?: string } }>>(
    ['vm', 'list'],
    clusterEnv,
  );
  return Object.fromEntries(vms.map((v) => [v.name, v.host]));
}

const failed = (r: DrillReport) => r.invariants.filter((i) => !i.ok);

beforeAll(async () => {
  mkdirSync(run, { recursive: true });
  writeFileSync(file, SPEC);
  release = await acquireVmLock();
  expect((await runCli(['daemon', '--detach'], env)).code).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const applied = await runCli(['apply', '-f', file], clusterEnv);
  expect(applied.code, applied.stderr + applied.stdout).toBe(0);
  // Both guests boot (TCG): wait until their guest agents answer.
  for (const vm of ['web', 'db']) {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const r = await runCli(['vm', 'exec', vm, '--', 'true'], clusterEnv, 30_000);
      if (r.code === 0) break;
      if (Date.now() > deadline) throw new Error(`${vm}'s guest never answered: ${r.stderr}`);
      await new Promise((res) => setTimeout(res, 1_000));
    }
  }
}, 600_000); // the VM lock (another run's guests), a 3-host lab with etcd and two TCG boots on 2 loaded cores

afterAll(async () => {
  await runCli(['lab', 'down', '-f', file], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

describe('HA drills in a lab with real QEMU and real etcd', () => {
  it('a host killed: its VM runs on another host and its guest answers; no VM twice; the host comes back', async () => {
    const before = await placement();
    const r = await drill('host-failure', 'host2');
    expect(failed(r), JSON.stringify(r)).toEqual([]);
    expect(r.restored).toBe(true);
    expect(r.detectedS).toBeGreaterThan(0);
    const db = r.vms.find((v) => v.vm === 'db');
    expect(db).toMatchObject({ from: before.db });
    expect(db?.to).toBeDefined();
    expect(db?.to).not.toBe('host2');
    expect(db!.restartedS!).toBeGreaterThan(r.detectedS! - 1);
    expect(db!.guestAnswersS!).toBeGreaterThanOrEqual(db!.restartedS!);
    expect((await placement()).db).toBe(db!.to);
  });

  it('a host cut off: it stops its VMs and the others start them, never both at once', async () => {
    const where = await placement();
    const target = where.web!;
    const r = await drill('partition', target);
    expect(failed(r), JSON.stringify(r)).toEqual([]);
    expect(r.restored).toBe(true);
    const moved = r.vms.filter((v) => v.from === target);
    expect(moved.length).toBeGreaterThan(0);
    for (const v of moved) {
      expect(v.stoppedS, `${v.vm} was not fenced on ${target}`).toBeDefined();
      expect(v.to).toBeDefined();
      expect(v.to).not.toBe(target);
      // The isolated host fenced before its lease could end; HA restarted only after it ended.
      expect(v.stoppedS!).toBeLessThanOrEqual(v.restartedS!);
    }
  });
});
