// Host heartbeats through the real CLI: a lab host whose agent dies turns unreachable, and up again when restarted.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { HostStatus } from '../../src/controller/controller.js';
import { cliJson, runCli } from '../helpers/cli.js';

const LAB = 'ithb';
const SPEC = `
version: 1
hosts: [{ name: host1 }, { name: host2 }]
lab:
  name: ${LAB}
  lan: { cidr: 192.168.72.0/24, gateway: 192.168.72.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.72 }
  hosts: [{ name: host1, address: 192.168.72.10 }, { name: host2, address: 192.168.72.11 }]
`;

const root = mkdtempSync('/tmp/vmlink-ithb-');
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'c.sock'),
};
const file = join(root, 'spec.yaml');

type Status = { hosts: HostStatus[] };
type Event = { kind: string; message: string };
const hostState = async (name: string) =>
  (await cliJson<Status>(['status'], env)).hosts.find((h) => h.name === name)!;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(file, SPEC);
  const d = await runCli(['daemon', '--detach', '--heartbeat-ms', '1000'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const a = await runCli(['apply', '-f', file], env);
  expect(a.code, a.stderr).toBe(0);
});

afterAll(async () => {
  await runCli(['lab', 'down', '-f', file], env);
  await runCli(['daemon', '--stop'], env);
  rmSync(root, { recursive: true, force: true });
});

it('shows both hosts up, reached across the lab LAN', async () => {
  const st = await waitFor(
    'both hosts up',
    async () => {
      const s = await cliJson<Status>(['status'], env);
      return s.hosts.every((h) => h.state === 'up') ? s : undefined;
    },
    10_000,
  );
  for (const h of st.hosts) {
    expect(h.reachable).toBe(true);
    expect(h.lastSeen).toBeDefined();
    expect(h.report?.capabilities.backends).toContain('linux');
  }
  const text = await runCli(['status'], env);
  expect(text.stdout).toMatch(/host2\s+up\s+\d+ s ago/);
  // Served from the controller's kept reports once its refresher ran (a heartbeat period: 1 s here), with their
  // age; --live asks every agent.
  const kept = await waitFor(
    'status from kept reports',
    async () => {
      const s = await cliJson<Status>(['status'], env);
      return s.hosts.every((h) => (h.reportAgeMs ?? 0) > 0) ? s : undefined;
    },
    10_000,
  );
  expect(kept.hosts.every((h) => h.reachable && h.report)).toBe(true);
  const live = await cliJson<Status>(['status', '--live'], env);
  expect(live.hosts.map((h) => h.reportAgeMs)).toEqual([0, 0]);
  expect((await runCli(['status'], env)).stdout).toMatch(/host1\s+up\s+\d+ s ago\s+(\d+ s old|live)\s/);
});

it('marks a host whose agent died unreachable within seconds, with an event', async () => {
  const pid = Number(readFileSync(join(env.VMLINK_RUN_DIR, 'lab', LAB, 'host2.agent.pid'), 'utf8'));
  process.kill(pid, 'SIGKILL');
  const killedAt = Date.now();
  const h2 = await waitFor(
    'host2 unreachable',
    async () => {
      const h = await hostState('host2');
      return h.state === 'unreachable' ? h : undefined;
    },
    15_000,
  );
  expect(Date.now() - killedAt).toBeLessThan(15_000);
  expect(h2.reachable).toBe(false);
  expect(h2.missed).toBeGreaterThanOrEqual(3);
  expect((await hostState('host1')).state).toBe('up');
  const events = await cliJson<Event[]>(['events'], env);
  expect(events.some((e) => e.kind === 'host.unreachable' && e.message.startsWith('host2'))).toBe(true);
  const text = await runCli(['status'], env);
  expect(text.stdout).toMatch(/host2\s+UNREACHABLE/);
  // Planning needs every host: a clear refusal naming host2.
  const plan = await runCli(['plan', '-f', file], env);
  expect(plan.code).not.toBe(0);
  expect(plan.stderr).toContain('host2');
  expect(plan.stderr).toMatch(/unreachable since/);
});

it('sees the host up again once `lab up` restarts its agent', async () => {
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr).toBe(0);
  expect(up.stdout).toContain('starting the agent of host2');
  await waitFor(
    'host2 up again',
    async () => ((await hostState('host2')).state === 'up' ? true : undefined),
    10_000,
  );
  const events = await cliJson<Event[]>(['events'], env);
  expect(events.some((e) => e.kind === 'host.up' && e.message.startsWith('host2 is up again'))).toBe(true);
});

it('removes what ran on a host that leaves the spec', async () => {
  const withNet = join(root, 'net.yaml');
  writeFileSync(
    withNet,
    SPEC.replace('lab:', 'networks: [{ name: iso2, host: host2, mode: isolated, cidr: 10.72.0.0/24 }]\nlab:'),
  );
  const a = await runCli(['apply', '-f', withNet], env);
  expect(a.code, a.stderr).toBe(0);
  expect(a.stdout).toContain('+ network iso2');
  // host2 stays a lab machine (a peer now) but is no longer a vmlink host.
  const without = join(root, 'without.yaml');
  writeFileSync(
    without,
    SPEC.replace('hosts: [{ name: host1 }, { name: host2 }]', 'hosts: [{ name: host1 }]').replace(
      'hosts: [{ name: host1, address: 192.168.72.10 }, { name: host2, address: 192.168.72.11 }]',
      'hosts: [{ name: host1, address: 192.168.72.10 }]\n  peers: [{ name: host2, address: 192.168.72.11 }]',
    ),
  );
  const plan = await runCli(['plan', '-f', without], env);
  expect(plan.code, plan.stderr).toBe(0);
  expect(plan.stdout).toMatch(/- network iso2 on host2/);
  const b = await runCli(['apply', '-f', without], env);
  expect(b.code, b.stderr).toBe(0);
  // host2's certificate is revoked now: ask its agent on its own local socket (root only, no TLS).
  const agent2 = join(env.VMLINK_RUN_DIR, 'lab', LAB, 'host2.agent.sock');
  const { HttpClient } = await import('../../src/shared/http/client.js');
  const { HostReportSchema } = await import('../../src/agent/wire.js');
  const report = await new HttpClient(`unix://${agent2}`).get('/v1/report', HostReportSchema);
  expect(report.networks).toEqual([]);
  const st = await cliJson<Status>(['status'], env);
  expect(st.hosts.map((h) => h.name)).toEqual(['host1']);
});
