// Commit-confirm through the real CLI: a change that cuts a host's management path is rolled back by the host
// itself, the apply fails saying so, and the host answers again with its old address; also when the agent's disk is
// full and it cannot write its commit-confirm records.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { HostStatus } from '../../src/controller/controller.js';
import { pollUntil } from '../../src/shared/time.js';
import { cliJson, runCli } from '../helpers/cli.js';

const LAB = 'itcc';
const spec = (network: string, extra = '') => `
version: 1
hosts:
  - name: host1
    network: ${network}
${extra}
lab:
  name: ${LAB}
  lan: { cidr: 192.168.73.0/24, gateway: 192.168.73.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.73 }
  hosts: [{ name: host1, address: 192.168.73.10 }]
`;
// The same address in a /30 whose gateway does not exist: the management station (.254) is off its subnet.
const GOOD = spec('{ addresses: [192.168.73.10/24], gateway: 192.168.73.1 }');
const CUT = spec('{ addresses: [192.168.73.10/30], gateway: 192.168.73.9 }', '    confirmTimeoutSeconds: 8');

const root = mkdtempSync('/tmp/vmlink-itcc-');
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'c.sock'),
};
const good = join(root, 'good.yaml');
const cut = join(root, 'cut.yaml');
const addrs = () =>
  execFileSync('ip', ['-n', `vl-${LAB}-host1`, '-4', '-o', 'addr', 'show', 'dev', 'eth0'], {
    encoding: 'utf8',
  });

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(good, GOOD);
  writeFileSync(cut, CUT);
  const d = await runCli(['daemon', '--detach', '--heartbeat-ms', '1000'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', good], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
});

afterAll(async () => {
  await runCli(['lab', 'down', '-f', good], env);
  await runCli(['daemon', '--stop'], env);
  rmSync(root, { recursive: true, force: true });
});

it('applies and confirms an uplink change that keeps the management path', async () => {
  const r = await runCli(['apply', '-f', good], env);
  expect(r.code, r.stderr + r.stdout).toBe(0);
  expect(r.stdout).toContain('~ uplink of host1');
  const plan = await runCli(['plan', '-f', good], env);
  expect(plan.stdout.trim()).toBe('No changes. Infrastructure matches the spec.');
  expect(addrs()).toContain('192.168.73.10/24');
});

it('fails an apply whose uplink change cuts the host off, and the host rolls it back by itself', async () => {
  const started = Date.now();
  const r = await runCli(['apply', '-f', cut], env);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(
    /step 1\/1 \(~ uplink of host1 .*\) cut host1's management path; host1 rolled it back by itself after 8 s\. Nothing after it was applied\./,
  );
  expect(r.stdout).toMatch(
    /waiting for host1 to answer on its management path \(commit-confirm, \d+ s left\)/,
  );
  expect(Date.now() - started).toBeGreaterThan(8_000);
  // The host has its original address back and answers across the LAN again.
  expect(addrs()).toContain('192.168.73.10/24');
  const st = await cliJson<{ hosts: HostStatus[] }>(['status'], env);
  expect(st.hosts[0]!.reachable).toBe(true);
  // The change was not kept: planning it again shows it again.
  const plan = await runCli(['plan', '-f', cut], env);
  expect(plan.code, plan.stderr).toBe(0);
  expect(plan.stdout).toContain('~ uplink of host1');
});

it('restarts a dead management relay on `lab up`', async () => {
  const pid = Number(readFileSync(join(env.VMLINK_RUN_DIR, 'lab', LAB, 'relay.pid'), 'utf8'));
  process.kill(pid, 'SIGKILL');
  const down = await runCli(['plan', '-f', good], env);
  expect(down.code).not.toBe(0);
  const up = await runCli(['lab', 'up', '-f', good], env);
  expect(up.code, up.stderr).toBe(0);
  expect(up.stdout).toContain('starting the management relay');
  const st = await cliJson<{ hosts: HostStatus[] }>(['status'], env);
  expect(st.hosts[0]!.reachable).toBe(true);
});

it('rolls back a change that cuts the host off when its agent cannot write to its full disk', async () => {
  // The agent's records live on a 64 KiB tmpfs, filled up; the agent is restarted onto it (it runs in its own mount
  // namespace, which does not see later mounts where / is private).
  const confirms = join(env.VMLINK_STATE_DIR, 'lab', LAB, 'host1', 'confirms');
  const pidfile = join(env.VMLINK_RUN_DIR, 'lab', LAB, 'host1.agent.pid');
  const pid = Number(readFileSync(pidfile, 'utf8'));
  process.kill(pid, 'SIGKILL');
  await pollUntil(async () => !existsSync(`/proc/${pid}`), { timeoutMs: 5_000, intervalMs: 50 });
  mkdirSync(confirms, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'vmlink-itcc-full', confirms]);
  try {
    expect(() => writeFileSync(join(confirms, 'filler'), Buffer.alloc(1024 * 1024))).toThrow(/ENOSPC/);
    const up = await runCli(['lab', 'up', '-f', good], env);
    expect(up.code, up.stderr + up.stdout).toBe(0);
    expect(up.stdout).toContain('starting the agent of host1');

    const r = await runCli(['apply', '-f', cut], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/cut host1's management path; host1 rolled it back by itself after 8 s\./);
    expect(addrs()).toContain('192.168.73.10/24');
    const st = await cliJson<{ hosts: HostStatus[] }>(['status'], env);
    expect(st.hosts[0]!.reachable).toBe(true);
    // The agent said why it could not keep its record, and lives on.
    const log = readFileSync(join(env.VMLINK_RUN_DIR, 'lab', LAB, 'host1.agent.log'), 'utf8');
    expect(log).toMatch(/commit-confirm record not written; kept in memory/);
    expect(log).toMatch(/ENOSPC/);
  } finally {
    execFileSync('umount', ['-l', confirms]);
  }
});
