// Host tuning through the real CLI, daemon and lab agent: `hosts[].tuning` sets TCP parameters in the lab host's
// network namespace (read back from inside it) and never the machine's own; the plan shows drift; a change the
// controller does not confirm is rolled back by the agent after its window; an algorithm the host cannot set is
// refused before anything changes. One lab, one host, no guest.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfirmStateSchema, OkSchema } from '../../src/agent/wire.js';
import type { Status } from '../../src/controller/wire.js';
import { HttpClient } from '../../src/shared/http/client.js';
import { pollUntil } from '../../src/shared/time.js';
import { cliJson, runCli } from '../helpers/cli.js';

const LAB = 'ittu';
const NS = `vl-${LAB}-host1`;
const KEYS = {
  congestion: 'net.ipv4.tcp_congestion_control',
  mtuProbing: 'net.ipv4.tcp_mtu_probing',
  ecn: 'net.ipv4.tcp_ecn',
  fastOpen: 'net.ipv4.tcp_fastopen',
} as const;
const spec = (tuning?: string) => `
version: 1
hosts:
  - name: host1
    confirmTimeoutSeconds: 5
${tuning ? `    tuning: ${tuning}\n` : ''}
lab:
  name: ${LAB}
  lan: { cidr: 192.168.76.0/24, gateway: 192.168.76.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.76 }
  hosts: [{ name: host1, address: 192.168.76.10 }]
`;

const root = mkdtempSync('/tmp/vmlink-ittu-');
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'c.sock'),
};
const file = (name: string, text: string) => {
  const f = join(root, `${name}.yaml`);
  writeFileSync(f, text);
  return f;
};
const bare = file('bare', spec());
// The agent's local admin socket (no certificate): how the test sends a change no controller will confirm.
const agent = new HttpClient(`unix://${join(env.VMLINK_RUN_DIR, 'lab', LAB, 'host1.agent.sock')}`, {
  timeoutMs: 10_000,
});

/** The four parameters, read in this process's namespace (the machine's root one) or inside the lab host's. */
const read = (netns?: string): Record<keyof typeof KEYS, string> => {
  const argv = ['sysctl', '-n', ...Object.values(KEYS)];
  const out = netns
    ? execFileSync('ip', ['netns', 'exec', netns, ...argv], { encoding: 'utf8' })
    : execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  const [congestion, mtuProbing, ecn, fastOpen] = out.trim().split('\n') as [string, string, string, string];
  return { congestion, mtuProbing, ecn, fastOpen };
};
const machineList = (key: string) =>
  execFileSync('sysctl', ['-n', key], { encoding: 'utf8' }).trim().split(/\s+/);

let machineBefore: ReturnType<typeof read>;

beforeAll(async () => {
  machineBefore = read();
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  const d = await runCli(['daemon', '--detach'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', bare], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
});

afterAll(async () => {
  await runCli(['lab', 'down', '-f', bare], env);
  await runCli(['daemon', '--stop'], env);
  rmSync(root, { recursive: true, force: true });
  // Whatever happened above, the machine's own values were never touched.
  expect(read()).toEqual(machineBefore);
});

const tuningOf = async () => {
  const st = await cliJson<Status>(['status'], env);
  return st.hosts[0]!.report!.capabilities.tuning!;
};

it('reports what the lab host can set: outside the root namespace, the loaded algorithms the machine allows', async () => {
  await runCli(['apply', '-f', bare], env);
  const t = await tuningOf();
  expect(t.rootNamespace).toBe(false);
  expect(t.keys).toEqual(['congestion', 'mtuProbing', 'ecn', 'fastOpen']);
  const available = machineList('net.ipv4.tcp_available_congestion_control');
  const allowed = machineList('net.ipv4.tcp_allowed_congestion_control');
  expect(t.congestion).toEqual(available.filter((n) => allowed.includes(n)).sort());
  const ns = read(NS);
  expect(t.current).toEqual({
    congestion: ns.congestion,
    mtuProbing: Number(ns.mtuProbing),
    ecn: Number(ns.ecn),
    fastOpen: Number(ns.fastOpen),
  });
});

it("applies congestion: bbr in the lab host's namespace, commit-confirmed; the machine's own values stay", async () => {
  expect(
    machineList('net.ipv4.tcp_allowed_congestion_control'),
    'this machine must allow bbr outside its root namespace (net.ipv4.tcp_allowed_congestion_control)',
  ).toContain('bbr');
  // From reno to bbr, so that the change is a change whatever default the namespace started with.
  const reno = await runCli(['apply', '-f', file('reno', spec('{ congestion: reno, ecn: 1 }'))], env);
  expect(reno.code, reno.stderr + reno.stdout).toBe(0);
  expect(reno.stdout).toMatch(
    /~ tuning of host1: congestion \S+ -> reno, ecn \d -> 1 \[commit-confirm 5 s\]/,
  );
  expect(read(NS)).toMatchObject({ congestion: 'reno', ecn: '1' });
  expect(read()).toEqual(machineBefore);

  const bbr = file('bbr', spec('{ congestion: bbr, ecn: 1 }'));
  const r = await runCli(['apply', '-f', bbr], env);
  expect(r.code, r.stderr + r.stdout).toBe(0);
  expect(r.stdout).toContain('~ tuning of host1: congestion reno -> bbr [commit-confirm 5 s]');
  expect(read(NS)).toMatchObject({ congestion: 'bbr', ecn: '1' });
  expect(read()).toEqual(machineBefore);
  const plan = await runCli(['plan', '-f', bbr], env);
  expect(plan.stdout.trim()).toBe('No changes. Infrastructure matches the spec.');
  const st = await runCli(['status'], env);
  expect(st.stdout).toMatch(
    /Tuning:\n {2}host1: congestion bbr, mtuProbing \d, ecn 1, fastOpen \d+ \(as the spec says\)/,
  );
});

it('shows a value changed behind its back as drift, and the next apply puts it back', async () => {
  execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-q', '-w', `${KEYS.ecn}=0`]);
  const bbr = join(root, 'bbr.yaml');
  const plan = await runCli(['plan', '-f', bbr], env);
  expect(plan.stdout).toContain('~ tuning of host1: ecn 0 -> 1 [commit-confirm 5 s]');
  const st = await runCli(['status'], env);
  expect(st.stdout).toContain('(drift from the spec: ecn 0 -> 1)');
  const r = await runCli(['apply', '-f', bbr], env);
  expect(r.code, r.stderr + r.stdout).toBe(0);
  expect(read(NS).ecn).toBe('1');
});

it('rolls an unconfirmed change back by itself when its window ends', async () => {
  const before = read(NS);
  const id = randomUUID();
  const next = before.mtuProbing === '2' ? 1 : 2;
  await agent.post(
    '/v1/actions',
    { kind: 'tuning.configure', tuning: { mtuProbing: next, ecn: 2 }, confirm: { id, timeoutMs: 5_000 } },
    OkSchema,
  );
  expect(read(NS)).toMatchObject({ mtuProbing: String(next), ecn: '2' });
  expect((await agent.get(`/v1/confirm/${id}`, ConfirmStateSchema)).state).toBe('pending');
  const st = await pollUntil(
    async () => {
      const s = await agent.get(`/v1/confirm/${id}`, ConfirmStateSchema);
      return s.state === 'pending' ? undefined : s;
    },
    { timeoutMs: 20_000, intervalMs: 250 },
  );
  expect(st).toMatchObject({
    state: 'rolled-back',
    detail: expect.stringMatching(/not confirmed within 5 s/),
  });
  expect(read(NS)).toEqual(before);
  expect(read()).toEqual(machineBefore);
});

it('refuses an algorithm the host cannot set, naming the host and why, before anything changes', async () => {
  const t = await tuningOf();
  const missing = ['vegas', 'westwood', 'yeah', 'nosuchcc'].find((n) => !t.congestion.includes(n))!;
  const before = read(NS);
  const r = await runCli(['apply', '-f', file('missing', spec(`{ congestion: ${missing}, ecn: 0 }`))], env);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(
    new RegExp(
      `hosts\\[0\\]\\.tuning\\.congestion.*host "host1" cannot apply its tuning: congestion control ${missing} is not loaded`,
    ),
  );
  expect(r.stdout).not.toContain('~ tuning of host1');
  expect(read(NS)).toEqual(before);

  // One the kernel has loaded but the machine does not allow outside its root namespace (cubic where the default is
  // bbr), where there is one: refused with that reason.
  const notAllowed = t.congestionAvailable.find((n) => !t.congestionAllowed.includes(n));
  if (notAllowed) {
    const na = await runCli(['apply', '-f', file('na', spec(`{ congestion: ${notAllowed} }`))], env);
    expect(na.code).not.toBe(0);
    expect(na.stderr).toContain(
      `congestion control ${notAllowed} is loaded but not allowed outside the machine's root network namespace`,
    );
  }

  // The agent checks too (a request that bypasses admission): it refuses and arms nothing (outside the root
  // namespace it loads no module: one loaded now could not be set there).
  await expect(
    agent.post(
      '/v1/actions',
      {
        kind: 'tuning.configure',
        tuning: { congestion: missing, ecn: 0 },
        confirm: { id: randomUUID(), timeoutMs: 5_000 },
      },
      OkSchema,
    ),
  ).rejects.toThrow(new RegExp(`host host1 cannot apply its tuning: congestion control ${missing}`));
  expect(read(NS)).toEqual(before);
  expect(read()).toEqual(machineBefore);
  // A machine-wide key is not even expressible: the wire refuses unknown fields.
  await expect(
    agent.post('/v1/actions', { kind: 'tuning.configure', tuning: { rmemMax: 1 } }, z.unknown()),
  ).rejects.toThrow(/rmemMax|Unrecognized/);
});
