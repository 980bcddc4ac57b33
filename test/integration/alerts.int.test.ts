// The seed's two alert rules (examples/alerts.yaml) on a real lab: one host started by `vmlink lab up`, one test guest
// whose data disk is a volume of a dir pool on its own 64 MiB tmpfs (so that filling the volume fills the pool). The
// controller runs in this process on a store of its own, reaching the lab agents over their local sockets: its
// collector takes real samples (`collectNow()`), it and the alert engine run on a fake clock (so `for: 5m` passes at
// once, and a minute of metric history takes a moment), wired as the daemon wires it (alertService). The guest's
// memory grows steadily: the doctor diagnoses guest-memory-growth from the collected history, and no longer once it
// stays flat. A guest burning CPU makes the host-CPU rule pending, then firing (a webhook receiver here gets the
// POST); a silence stops its resolve webhook; the guest stops and the alert resolves. The guest fills its disk: the
// pool rule fires and `scale` grows the volume through the resize path.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { AgentClient } from '../../src/controller/agents.js';
import { alertService } from '../../src/controller/alerts/service.js';
import { Controller } from '../../src/controller/controller.js';
import {
  MEMORY_GROWTH_MIN_BYTES,
  MEMORY_TREND_WINDOW_MS,
} from '../../src/controller/diagnose/guest-memory-growth.js';
import { gatherDoctor } from '../../src/controller/doctor.js';
import { SqliteStore } from '../../src/controller/store/sqlite.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { MetricsSnapshot } from '../../src/shared/metrics.js';
import { pollUntil, sleep } from '../../src/shared/time.js';
import { trustAgentsAsController } from '../helpers/agent-trust.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'italr';
const root = mkdtempSync('/tmp/vmlink-italr-');
// QEMU runs under its own uid and must reach its VM directory and the pool below this one.
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
// Below the lab host's pool root (its agent refuses pools elsewhere).
const poolDir = join(env.VMLINK_STATE_DIR, 'lab', LAB, 'host1', 'pools', 'data');
const file = join(root, 'spec.yaml');

const spec = (cpuThreshold: number, hook: string) => `
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: anet, host: host1, mode: isolated, cidr: 10.121.0.0/24 }
pools:
  - { name: data, type: dir, host: host1, path: ${poolDir} }
volumes:
  - { name: fill, pool: data, sizeMiB: 128 }
vms:
  - name: a1
    host: host1
    # Room above what QEMU already holds after the boot for the doctor's 64 MiB of steady growth.
    memoryMiB: 512
    disks: [{ name: fill, pool: data, volume: fill }]
    nics: [{ network: anet, ip: 10.121.0.10 }]
alerts:
  - name: host-cpu
    expr: vmlink_host_cpu_utilization{host="host1"}
    threshold: ${cpuThreshold}
    for: 5m
    severity: critical
    summary: "CPU of {{host}} at {{value}}"
    actions: [{ type: log }, { type: webhook, url: "${hook}" }]
  - name: pool-full
    expr: vmlink_pool_utilization{pool="data"}
    threshold: 0.8
    actions: [{ type: scale, volume: data/fill, growByMiB: 64, maxMiB: 256 }]
lab:
  name: ${LAB}
  lan: { cidr: 192.168.121.0/24, gateway: 192.168.121.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.121 }
  hosts: [{ name: host1, address: 192.168.121.10 }]
`;

let release: (() => Promise<void>) | undefined;
let mounted = false;
let store: SqliteStore | undefined;
let controller: Controller;
let stopAlerts: (() => Promise<void>) | undefined;
let now = Date.parse('2026-12-01T10:00:00Z');
const posts: Array<{ rule: string; state: string; labels: Record<string, string> }> = [];
const receiver = createServer((req, res) => {
  let text = '';
  req.on('data', (c: Buffer) => {
    text += c.toString();
  });
  req.on('end', () => {
    posts.push(JSON.parse(text));
    res.end('ok');
  });
});
let hookUrl = '';
// The lab agent's own local socket (no TLS), as `lab up` checks its health.
const agentSocket = `unix://${join(env.VMLINK_RUN_DIR, 'lab', LAB, 'host1.agent.sock')}`;
const host1 = new AgentClient('host1', agentSocket);

async function guest(line: string, timeoutMs = 60_000): Promise<string> {
  const r = await host1.exec('a1', ['sh', '-c', line], timeoutMs);
  expect(r.exitCode, r.stderr).toBe(0);
  return r.stdout;
}

async function apply(text: string) {
  writeFileSync(file, text);
  await controller.apply(text, file, { progress: () => {}, signal: new AbortController().signal });
}

const value = (s: MetricsSnapshot, name: string, labels: Record<string, string>) =>
  s.series.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
const instance = async (rule: string) =>
  (await controller.alerts.view()).instances.find((i) => i.rule === rule);

/**
 * The doctor as `GET /v1/doctor` gathers it, on this process's collector and fake clock. It asks the agents as the
 * controller does: over the lab relay (its socket is under VMLINK_RUN_DIR), in mutual TLS as the daemon's controller.
 */
async function doctor() {
  const saved = process.env.VMLINK_RUN_DIR;
  process.env.VMLINK_RUN_DIR = env.VMLINK_RUN_DIR;
  const untrust = await trustAgentsAsController(env.VMLINK_STATE_DIR);
  try {
    return await gatherDoctor((await controller.currentSpec())!.spec, 30_000, [], {
      metrics: controller.metrics,
      now: () => now,
    });
  } finally {
    untrust();
    if (saved === undefined) delete process.env.VMLINK_RUN_DIR;
    else process.env.VMLINK_RUN_DIR = saved;
  }
}

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  mkdirSync(poolDir, { recursive: true });
  // The pool's own filesystem: its use is the volume's allocation.
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0755', 'tmpfs', poolDir]);
  mounted = true;
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  writeFileSync(file, spec(0.99, hookUrl));
  release = await acquireVmLock();
  const d = await runCli(['daemon', '--detach'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  store = new SqliteStore(join(root, 'alerts-test.db'));
  controller = new Controller(store, new SystemRunner(), {
    agents: () => host1,
    metrics: { now: () => now },
    alerts: { now: () => now, actions: { webhookBackoffMs: 100 } },
  });
  const svc = alertService(controller.alerts, controller.metrics, (rows) =>
    controller.metrics.series.setAlerts(rows),
  );
  svc.start();
  stopAlerts = () => svc.stop();
  await apply(spec(0.99, hookUrl));
  const ready = await pollUntil(
    async () =>
      (await host1.exec('a1', ['true'], 5_000).then(
        (r) => r.exitCode === 0,
        () => false,
      )) || undefined,
    { timeoutMs: 120_000, intervalMs: 1_000 },
  );
  expect(ready).toBe(true);
}, 300_000);

afterAll(async () => {
  await stopAlerts?.().catch(() => {});
  // Lazily: QEMU may still hold the volume open; lab down then removes a plain directory.
  if (mounted) execFileSync('umount', ['-l', poolDir]);
  await runCli(['lab', 'down', '-f', file], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  await store?.close().catch(() => {});
  await new Promise<void>((r) => receiver.close(() => r()));
  rmSync(root, { recursive: true, force: true });
  await release?.();
}, 120_000);

describe('the doctor on the same lab', () => {
  // First: the leak must reach guest memory QEMU does not hold yet (the later tests' disk writes fill page cache).
  it('a guest whose memory grows steadily: guest-memory-growth with its evidence; gone after a flat window', async () => {
    const MiB = 1024 * 1024;
    const STEP = 16 * MiB;
    const rss = async () =>
      value(await controller.metrics.collectNow(), 'vmlink_vm_memory_rss_bytes', {
        host: 'host1',
        vm: 'a1',
      })!;
    let chunk = 0;
    // Whatever happens here, the later tests get the guest's memory back.
    onTestFinished(() =>
      host1.exec('a1', ['rm', '-rf', '/tmp/leak'], 30_000).then(
        () => {},
        () => {},
      ),
    );
    // The leak: 16 MiB more in the guest's tmpfs (/tmp), a file each time.
    const leak = () =>
      guest(
        `mkdir -p /tmp/leak && dd if=/dev/zero of=/tmp/leak/${chunk++} bs=1048576 count=${STEP / MiB} 2>&1`,
      );
    const warm = [await rss()];
    const rising: number[] = [];
    const flat: number[] = [];
    const mib = (xs: number[]) => xs.map((x) => (x / MiB).toFixed(0)).join(' ');
    const figures = () => `QEMU RSS (MiB): warm-up ${mib(warm)}; rising ${mib(rising)}; flat ${mib(flat)}`;
    // QEMU already holds the guest memory its boot touched (whole 2 MiB pages where the host has THP), and the
    // guest's allocator hands out the free pages there first: leak until a step shows as new resident memory. These
    // samples then fall out of the doctor's window.
    while (warm.length < 8 && (warm.length < 2 || warm.at(-1)! - warm.at(-2)! < STEP / 2)) {
      await leak();
      warm.push(await rss());
    }
    expect(warm.at(-1)! - warm.at(-2)!, figures()).toBeGreaterThanOrEqual(STEP / 2);
    now += MEMORY_TREND_WINDOW_MS + 60_000;

    // Eight minutes (of the collector's clock) of a steady leak: 16 MiB a minute, a sample after each.
    rising.push(await rss());
    for (let i = 0; i < 8; i++) {
      await leak();
      now += 60_000;
      rising.push(await rss());
    }
    const grown = await doctor();
    expect(grown.hosts, figures()).toEqual([expect.objectContaining({ host: 'host1', reachable: true })]);
    expect(grown.controller).toContainEqual(
      expect.objectContaining({
        name: 'guest memory trends',
        detail: expect.stringMatching(/^checked from/),
      }),
    );
    const found = grown.diagnoses.filter((d) => d.id === 'guest-memory-growth');
    expect(found, figures()).toEqual([
      expect.objectContaining({
        host: 'host1',
        object: 'vm a1',
        fix: expect.stringContaining('vmlink vm exec a1 -- ps'),
      }),
    ]);
    const d = found[0]!;
    const grew = /^vm a1 on host1: resident memory grew (\d+) MiB in 8\.0 min \(/.exec(d.summary);
    expect(grew, d.summary).not.toBeNull();
    expect(Number(grew![1]) * MiB).toBeGreaterThanOrEqual(MEMORY_GROWTH_MIN_BYTES);
    // Its evidence: the samples in the window (exactly the rising ones), the fit, the configured memory.
    expect(d.evidence[0]).toBe(
      `vmlink_vm_memory_rss_bytes{host="host1",vm="a1"}: 9 samples over 480 s, ${mib([rising[0]!])} -> ${mib([rising[8]!])} MiB`,
    );
    const fit = /^least-squares slope ([\d.]+) MiB\/min, R² ([\d.]+) /.exec(d.evidence[1]!);
    expect(fit, d.evidence[1]).not.toBeNull();
    expect(Number(fit![2])).toBeGreaterThanOrEqual(0.9);
    expect(d.evidence[2]).toBe('configured memory 512 MiB');

    // The guest frees it. QEMU keeps the pages it got (no balloon): its RSS stays where it is, a flat stretch; once
    // the window holds nothing else, there is no steady growth to diagnose.
    await guest('rm -rf /tmp/leak');
    for (let i = 0; i < MEMORY_TREND_WINDOW_MS / 60_000 + 1; i++) {
      now += 60_000;
      flat.push(await rss());
    }
    const after = await doctor();
    expect(after.hosts).toEqual([expect.objectContaining({ host: 'host1', reachable: true })]);
    expect(
      after.diagnoses.filter((x) => x.id === 'guest-memory-growth'),
      figures(),
    ).toEqual([]);
    console.info(`guest-memory-growth: ${d.summary}; ${d.evidence.join('; ')}; ${figures()}`);
  }, 180_000);
});

describe('the seed alert rules on a lab', () => {
  it('a guest burning CPU: host-cpu pending, firing after `for` (webhook), silenced, resolved when it stops', async () => {
    // Two idle samples give the host's idle share; the rule fires 0.4 CPU above it (a burning TCG vCPU is ~1).
    await controller.metrics.collectNow();
    await sleep(2_000);
    const idle = await controller.metrics.collectNow();
    const cpus = value(idle, 'vmlink_host_cpus', { host: 'host1' })!;
    const idleShare = value(idle, 'vmlink_host_cpu_utilization', { host: 'host1' })!;
    expect(cpus).toBeGreaterThanOrEqual(1);
    expect(idleShare).toBeGreaterThanOrEqual(0);
    const threshold = Number((idleShare + 0.4 / cpus).toFixed(4));
    await apply(spec(threshold, hookUrl));
    // The apply itself keeps the host's agent busy for a moment: wait for a quiet interval (pending -> inactive).
    const quiet = await pollUntil(
      async () => {
        await sleep(2_000);
        await controller.metrics.collectNow();
        return (await instance('host-cpu')) === undefined;
      },
      { timeoutMs: 60_000, intervalMs: 0 },
    );
    expect(quiet).toBe(true);

    // The guest burns CPU for 20 s in the foreground of one exec (a background loop could die with the exec).
    const burn = guest('end=$(($(date +%s) + 20)); while [ "$(date +%s)" -lt "$end" ]; do :; done', 90_000);
    const seen: number[] = [];
    const sample = async () => {
      await sleep(3_000);
      const s = await controller.metrics.collectNow();
      seen.push(value(s, 'vmlink_host_cpu_utilization', { host: 'host1' }) ?? -1);
      return (await instance('host-cpu'))?.state;
    };
    // The first sample while it burns is pending (the one before may straddle its start).
    const pending = await pollUntil(async () => ((await sample()) === 'pending' ? true : undefined), {
      timeoutMs: 12_000,
      intervalMs: 0,
    });
    expect(pending, `threshold ${threshold} (${cpus} CPUs, idle ${idleShare}), shares seen ${seen}`).toBe(
      true,
    );
    expect(posts).toEqual([]);
    now += 5 * 60_000;
    expect(await sample(), `threshold ${threshold}, shares seen ${seen}`).toBe('firing');
    const firing = await instance('host-cpu');
    expect(firing).toMatchObject({ state: 'firing', labels: { host: 'host1' } });
    expect(firing!.value).toBeGreaterThan(threshold);
    await controller.alerts.drain();
    expect(posts).toEqual([
      expect.objectContaining({ rule: 'host-cpu', state: 'firing', labels: { host: 'host1' } }),
    ]);
    const gauge = await controller.metrics.series.render();
    expect(gauge).toMatch(/vmlink_alerts\{rule="host-cpu",state="firing",severity="critical"\} 1/);
    await controller.alerts.silence(
      { rule: 'host-cpu', labels: { host: 'host1' }, forSeconds: 3600 },
      'test',
    );
    await burn;
    const resolved = await pollUntil(
      async () => {
        await sleep(3_000);
        now += 15_000;
        await controller.metrics.collectNow();
        return (await instance('host-cpu'))?.state === 'resolved' ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 0 },
    );
    expect(resolved).toBe(true);
    await controller.alerts.drain();
    // The silence held back the resolve webhook: still the one POST.
    expect(posts).toHaveLength(1);
    const kinds = (await store!.events(200)).map((e) => `${e.kind} ${e.message}`);
    expect(
      kinds.filter((k) => /^alert\.(pending|firing|resolved) host-cpu/.test(k)).map((k) => k.split(' ')[0]),
    ).toEqual(['alert.pending', 'alert.firing', 'alert.resolved']);
    expect(kinds.find((k) => k.startsWith('alert.resolved host-cpu'))).toMatch(
      /\[silenced by .*: no actions\]/,
    );
  }, 240_000);

  it('a filling volume: pool-full fires and scale grows the volume (volume list shows it)', async () => {
    const before = (await controller.storage.volumes('data')).find((v) => v.name === 'fill')!;
    expect(before.sizeMiB).toBe(128);
    const calm = await controller.metrics.collectNow();
    expect(value(calm, 'vmlink_pool_utilization', { host: 'host1', pool: 'data' })).toBeLessThan(0.8);
    expect(await instance('pool-full')).toBeUndefined();
    // The test guest boots from its initramfs: the volume is its only virtio disk.
    await guest(
      'd=$(ls /sys/block | grep ^vd | head -1); dd if=/dev/zero of=/dev/$d bs=1048576 count=56 conv=fsync 2>&1',
      120_000,
    );
    const full = await controller.metrics.collectNow();
    expect(value(full, 'vmlink_pool_utilization', { host: 'host1', pool: 'data' })).toBeGreaterThan(0.8);
    expect(await instance('pool-full')).toMatchObject({
      state: 'firing',
      labels: { host: 'host1', pool: 'data' },
    });
    await controller.alerts.drain();
    const after = (await controller.storage.volumes('data')).find((v) => v.name === 'fill')!;
    expect(after.sizeMiB).toBe(192);
    const events = (await store!.events(200)).map((e) => `${e.kind} ${e.message}`);
    expect(events).toContainEqual(expect.stringMatching(/^alert\.action pool-full.*grown 128 -> 192 MiB/));
    expect(events).toContainEqual(expect.stringMatching(/^volume\.resized data\/fill 128 -> 192 MiB/));
    // The guest sees the new size at once (grown online through QMP).
    const sectors = Number(await guest('d=$(ls /sys/block | grep ^vd | head -1); cat /sys/block/$d/size'));
    expect(sectors * 512).toBe(192 * 1024 * 1024);
  }, 240_000);
});
