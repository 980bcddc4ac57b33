// Live migration end to end through the real CLI (docs/mobility.md): one lab of three hosts on a VXLAN overlay whose
// gateway sits on host3, one 256 MiB test guest. The explain's blockers from real conditions, then the guest moves
// host1 -> host2 under a 10 ms ping from host3 and answers it there, its memory (a file in its RAM disk) and HTTP
// service intact after, the owner record moved, and a second apply leaves it where it is. The guest has a 32 MiB disk
// and a 16 MiB encrypted one (LUKS, under a vault secret) in its VM directory, so every move is a block migration
// (both copied over NBD through the agents' tunnel): a pattern written on one host reads back on the next, and the
// source's copy is gone. A second guest, m2, pinned to a
// host CPU, runs beside m1 on host1: last, `vmlink balance --apply` (1-point threshold) moves m1 off it live, for good.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BalanceApplyAnswer, BalancePlanView } from '../../src/controller/wire-balance.js';
import { waitGuest } from '../helpers/backup-guest.js';
import { cliJson, runCli } from '../helpers/cli.js';
import { largestGap, pingAround } from '../helpers/ping.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'mig1';
const GUEST_IP = '10.87.0.11';
const spec = (appHosts = 'host1, host2, host3') => `
version: 1
cluster: { store: sqlite, balanceThreshold: 1 }
hosts:
  - { name: host1 }
  - { name: host2 }
  - { name: host3 }
networks:
  - { name: app, mode: vxlan, vni: 1087, hosts: [${appHosts}], cidr: 10.87.0.0/24, gateway: { host: host3 } }
vms:
  - { name: m1, host: host1, memoryMiB: 256, nics: [{ network: app, ip: ${GUEST_IP} }], disks: [{ name: data, sizeMiB: 32 }, { name: vault, sizeMiB: 16, encryption: { secret: vault-key } }] }
  - { name: m2, host: host1, memoryMiB: 128, cpu: { pin: [0] }, nics: [{ network: app, ip: 10.87.0.12 }] }
lab:
  name: ${LAB}
  lan: { cidr: 192.168.87.0/24, gateway: 192.168.87.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.87 }
  hosts:
    - { name: host1, address: 192.168.87.11 }
    - { name: host2, address: 192.168.87.12 }
    - { name: host3, address: 192.168.87.13 }
`;

const root = mkdtempSync('/tmp/vmlink-mig-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const file = join(root, 'spec.yaml');
let release: (() => Promise<void>) | undefined;

interface Check {
  id: string;
  ok: boolean;
  severity: string;
  message: string;
  fix?: string;
}
const explain = (to: string) =>
  runCli(['vm', 'migrate', 'm1', '--to', to, '--explain', '--json'], env).then((r) => ({
    code: r.code,
    e: JSON.parse(r.stdout || '{}') as {
      ok: boolean;
      checks: Check[];
      from: string;
      estimate: { dirtyRateMiBps?: number };
    },
    stderr: r.stderr,
  }));
const blockers = (checks: Check[]) => checks.filter((c) => !c.ok && c.severity === 'blocker');

const guestSh = (cmd: string) => runCli(['vm', 'exec', 'm1', '--', 'sh', '-c', cmd], env);
/** Every copy of m1's disk `data` under the test's directory (each lab host keeps its VMs under it). */
const diskFiles = async () =>
  (await readdir(root, { recursive: true })).filter((f) => f.endsWith('/m1/disk-data.qcow2')).sort();

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  // Network app starts off host2 (the explain's first real blocker); the first test adds it.
  writeFileSync(file, spec('host1, host3'));
  release = await acquireVmLock();
  expect((await runCli(['daemon', '--detach'], env)).code).toBe(0);
  // m1's disk `vault` is encrypted (LUKS) under this secret: block migration copies it too.
  const key = join(root, 'vault-key');
  writeFileSync(key, randomBytes(32).toString('base64'), { mode: 0o600 });
  const set = await runCli(['secret', 'set', 'vault-key', '--from-file', key], env);
  expect(set.code, set.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const r = await runCli(['apply', '-f', file], env);
  expect(r.code, r.stderr + r.stdout).toBe(0);
});

afterAll(async () => {
  await runCli(['lab', 'down', '-f', file], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

describe('live migration', () => {
  it('explains blockers from real conditions: the same host, a host outside the spec, a network missing there', async () => {
    const same = await explain('host1');
    expect(same.code).toBe(4);
    expect(blockers(same.e.checks).map((c) => c.message)).toContain('vm m1 already runs on host1');
    const unknown = await explain('host9');
    expect(blockers(unknown.e.checks)[0]?.message).toBe(
      'host host9 is not in the applied spec (hosts: host1, host2, host3)',
    );
    // Network app is not on host2 yet: the explain names it and the fix.
    const noNet = await explain('host2');
    expect(blockers(noNet.e.checks)).toEqual([
      expect.objectContaining({ id: 'network:app', message: 'network app is not on host2' }),
    ]);
    const refused = await runCli(['vm', 'migrate', 'm1', '--to', 'host2'], env);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/network app is not on host2/);
    writeFileSync(file, spec());
    expect((await runCli(['apply', '-f', file], env)).code).toBe(0);
    const ok = await explain('host2');
    expect(ok.code, JSON.stringify(ok.e)).toBe(0);
    expect(ok.e).toMatchObject({ ok: true, from: 'host1', blockMigration: true });
    // The estimate carries the guest's dirty rate as QEMU measured it on host1 (page sampling: TCG and KVM alike).
    expect(ok.e.estimate.dirtyRateMiBps).toBeGreaterThanOrEqual(0);
  });

  it('moves the running guest host1 -> host2 under a 10 ms ping from host3: it answers there, memory and HTTP intact', async () => {
    const mark = `kept-${Date.now()}`;
    await waitGuest(env, 'm1');
    expect((await guestSh(`echo ${mark} > /tmp/mark`)).code).toBe(0);
    // A 10 ms ping from host3's namespace (the overlay's gateway there), answered before the move.
    // On host2 the guest answers host3 again: its reserved address passes host2's port guard though host2 never saw
    // its DHCP reply. A reply sent after the command returned, within 10 s; then 500 ms more for the tail.
    const {
      result: r,
      answeredBefore,
      times,
      returned,
      stoppedAt,
    } = await pingAround(`vl-${LAB}-host3`, GUEST_IP, () =>
      runCli(['vm', 'migrate', 'm1', '--to', 'host2', '--json'], env),
    );
    expect(answeredBefore, 'the guest answers host3 before the move').toBe(true);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const report = JSON.parse(r.stdout) as { from: string; to: string; downtimeMs?: number; totalMs: number };
    expect(report).toMatchObject({ from: 'host1', to: 'host2' });
    expect(report.downtimeMs).toBeGreaterThanOrEqual(0);
    const after = times.filter((t) => t > returned);
    expect(after.length, 'replies from the guest on host2 within 10 s of the move').toBeGreaterThan(0);
    // The largest silence, the one after the last reply included (a reply that never came counts). Bounded
    // generously (bench/migrate.ts measures it against the 300 ms): an outage, not a slow machine.
    const maxGap = largestGap(times, stoppedAt);
    console.log(
      `migrate: QEMU downtime ${report.downtimeMs} ms, largest ping gap ${maxGap.toFixed(0)} ms, first reply ${Math.round(after[0]! - returned)} ms after the command returned, total ${report.totalMs} ms`,
    );
    expect(maxGap).toBeLessThan(5_000);
    // Its RAM came along and its HTTP service still runs (asked inside the guest).
    const kept = await guestSh('cat /tmp/mark');
    expect(kept.stdout.trim()).toBe(mark);
    const http = await runCli(['vm', 'exec', 'm1', '--', 'wget', '-q', '-O', '-', 'http://127.0.0.1/'], env);
    expect(http.code, http.stderr).toBe(0);
    const list = await cliJson<Array<{ name: string; host: string; state: string }>>(
      ['vm', 'list', '--json'],
      env,
    );
    expect(list.find((v) => v.name === 'm1')).toMatchObject({ host: 'host2', state: 'running' });
  });

  it('keeps the new placement: a second apply changes nothing and the guest runs only on host2', async () => {
    const again = await runCli(['apply', '-f', file], env);
    expect(again.code, again.stderr + again.stdout).toBe(0);
    expect(again.stdout.trim().split('\n').pop()).toBe('no changes');
    const st = await cliJson<{ hosts: Array<{ name: string; report?: { vms: Array<{ name: string }> } }> }>(
      ['status', '--json'],
      env,
    );
    const holders = st.hosts.filter((h) => h.report?.vms.some((v) => v.name === 'm1')).map((h) => h.name);
    expect(holders).toEqual(['host2']);
  });

  it('moves it back host2 -> host1 as a block migration: its disks written on host2 read back on host1 (the encrypted one too), the source copy gone', async () => {
    // The guest's disks `data` and `vault` (serial = name; vault encrypted under vault-key), each written at two
    // places with fsync, caches dropped on reading.
    const dev = (disk: string) =>
      `D=$(for d in /sys/block/vd*; do [ "$(cat $d/serial)" = ${disk} ] && echo /dev/$(basename $d); done)`;
    const mark = `blk-${Date.now()}`;
    const places = [
      ['data', 1],
      ['data', 30],
      ['vault', 1],
      ['vault', 14],
    ] as const;
    for (const [disk, at] of places)
      expect(
        (
          await guestSh(
            `${dev(disk)}; printf %s ${mark}-${disk}-${at} | dd of=$D bs=1M seek=${at} conv=notrunc,fsync 2>/dev/null`,
          )
        ).code,
      ).toBe(0);
    const before = await diskFiles();
    expect(before.length, before.join(' ')).toBe(1);
    const r = await runCli(['vm', 'migrate', 'm1', '--to', 'host1', '--json'], env);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const report = JSON.parse(r.stdout) as {
      to: string;
      blockMigration: boolean;
      diskCopiedBytes?: number;
      totalMs: number;
    };
    expect(report).toMatchObject({ to: 'host1', blockMigration: true });
    expect(report.diskCopiedBytes).toBeGreaterThan(0);
    console.log(`block migration: ${report.diskCopiedBytes} disk bytes copied, total ${report.totalMs} ms`);
    for (const [disk, at] of places) {
      const want = `${mark}-${disk}-${at}`;
      const got = await guestSh(
        `${dev(disk)}; echo 3 > /proc/sys/vm/drop_caches; dd if=$D bs=1M skip=${at} count=1 2>/dev/null | head -c ${want.length}`,
      );
      expect(got.stdout.trim()).toBe(want);
    }
    // The encrypted disk's copy on host1 is a LUKS container of its own, not plaintext.
    const vault = (await readdir(root, { recursive: true })).filter((f) =>
      f.endsWith('/m1/disk-vault.qcow2'),
    );
    expect(vault.length, vault.join(' ')).toBe(1);
    const info = execFileSync('qemu-img', ['info', '--output=json', '-U', join(root, vault[0]!)], {
      encoding: 'utf8',
    });
    expect(info).toMatch(/"encrypted": true/);
    const http = await runCli(['vm', 'exec', 'm1', '--', 'wget', '-q', '-O', '-', 'http://127.0.0.1/'], env);
    expect(http.code, http.stderr).toBe(0);
    // One copy of the disk remains, a new file on host1 (the one on host2 went with its VM).
    const after = await diskFiles();
    expect(after.length, after.join(' ')).toBe(1);
    expect(after[0]).not.toBe(before[0]);
  });

  it('balances host1 under a 1-point threshold: --apply moves m1 off it live (m2 is pinned), the next plan keeps it', async () => {
    // m2 runs beside m1 on host1 from the start; the lab's hosts share one kernel, so a host's load is its own
    // processes' (docs/mobility.md). m2's vCPU is pinned to a host CPU: the balancer never moves it. m2 spins, so host1
    // is the busiest by CPU whether m1 moves or not: an idle m1 would otherwise carry host1's CPU peak with it, and
    // whether its move "worsens" the CPU spread would come down to the agents' CPU noise (a move that does is never
    // made; CI's failure of 2 Dec: no move planned).
    await waitGuest(env, 'm2');
    const spin = await runCli(
      ['vm', 'exec', 'm2', '--', 'sh', '-c', 'while :; do :; done </dev/null >/dev/null 2>&1 &'],
      env,
    );
    expect(spin.code, spin.stderr).toBe(0);
    const plan = await cliJson<BalancePlanView>(['balance', '--plan', '--json'], env);
    const shown = JSON.stringify(plan);
    expect(plan.before.spread.memory, shown).toBeGreaterThan(1);
    expect(
      plan.moves.map((m) => `${m.vm} ${m.from}`),
      shown,
    ).toContain('m1 host1');
    expect(plan.moves.filter((m) => m.vm === 'm2')).toEqual([]);
    const r = await runCli(['balance', '--apply', '--json'], env);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const a = JSON.parse(r.stdout) as BalanceApplyAnswer;
    expect(a.results.map((x) => [x.vm, x.from, x.ok])).toEqual([['m1', 'host1', true]]);
    const moved = a.results[0]!;
    console.log(`balance: m1 host1 -> ${moved.to} in ${moved.totalMs} ms`);
    const list = await cliJson<Array<{ name: string; host: string; state: string }>>(
      ['vm', 'list', '--json'],
      env,
    );
    expect(list.find((v) => v.name === 'm1')).toMatchObject({ host: moved.to, state: 'running' });
    // The next plan, from figures taken after the move (the collector's newest sample predates it), does not undo it.
    const next = await cliJson<BalancePlanView>(['balance', '--plan', '--json'], env);
    expect(
      next.moves.filter((m) => m.to === 'host1' || m.vm === 'm2'),
      JSON.stringify(next),
    ).toEqual([]);
    expect(next.notes.filter((n) => n.includes('metrics show'))).toEqual([]);
  });
});
