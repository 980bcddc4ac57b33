// Two real `vmlink daemon` processes on one real etcd: one active through the election, the other a standby that
// answers 421 naming it; the CLI with both sockets reaches the active one either way; a task running when the
// active role is lost is cancelled and says why; SIGKILL of the active one -> the standby takes over (time printed)
// and sees the state written before the kill.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskAcceptedSchema, type TaskView, TaskViewSchema } from '../../src/controller/wire.js';
import { type ClusterView, ClusterViewSchema } from '../../src/controller/wire-cluster.js';
import { NotActiveError } from '../../src/shared/errors.js';
import { AnyAnswerSchema, HttpClient } from '../../src/shared/http/client.js';
import { runCli } from '../helpers/cli.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';

const BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));
const root = mkdtempSync('/tmp/vmlink-itctl-');
const sock = (name: string) => join(root, 'run', `${name}.sock`);
const env = (sockets: string) => ({
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: sockets,
});
const api = (name: string) => new HttpClient(`unix://${sock(name)}`, { protocol: 'api', timeoutMs: 10_000 });

let etcd: TestEtcd;
const daemons = new Map<string, ChildProcess>();
let slowAgent: Server;
let agentCalls = 0;

/** Starts controller `name` as `vmlink daemon` on the test etcd; resolves once its socket answers. */
async function startController(name: string): Promise<ChildProcess> {
  const log = openSync(join(root, `${name}.log`), 'a');
  const child = spawn(
    process.execPath,
    [
      BIN,
      '--socket',
      sock(name),
      'daemon',
      '--store',
      `etcd+http://${etcd.endpoint.slice('http://'.length)}`,
      '--name',
      name,
      '--db',
      join(root, 'state', name, 'controller.db'),
      // Cluster controllers share one CA and one secrets key.
      '--pki-dir',
      join(root, 'state', 'pki'),
      '--secrets-key',
      join(root, 'state', 'secrets.key'),
      '--heartbeat-ms',
      '1000',
    ],
    { stdio: ['ignore', log, log], env: { ...process.env, ...env(sock(name)) } },
  );
  daemons.set(name, child);
  await waitFor(`${name} to answer`, async () =>
    (await api(name)
      .get('/v1/health', AnyAnswerSchema)
      .then(
        () => true,
        () => undefined,
      )) === true
      ? true
      : undefined,
  );
  return child;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000, stepMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}; logs:\n${[...daemons.keys()].map((n) => `--- ${n}\n${readLog(n)}`).join('\n')}`,
      );
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

const readLog = (name: string) => {
  try {
    return readFileSync(join(root, `${name}.log`), 'utf8').slice(-3000);
  } catch {
    return '(no log)';
  }
};
const view = (name: string): Promise<ClusterView> => api(name).get('/v1/cluster', ClusterViewSchema);
/** The name of the active controller once exactly one of `names` says it is active. */
const activeOf = (names: string[]) =>
  waitFor('one active controller', async () => {
    const views = await Promise.all(names.map((n) => view(n)));
    const active = views.filter((v) => v.self.role === 'active');
    return active.length === 1 ? active[0]!.self.name : undefined;
  });

beforeAll(async () => {
  mkdirSync(join(root, 'run'), { recursive: true });
  etcd = await startTestEtcd();
  // The first start makes the shared CA: the second controller starts once it exists.
  await startController('ctl1');
  await startController('ctl2');
  // An agent that answers every call after 15 s with an error: an apply waits on it.
  slowAgent = createServer((_req, res) => {
    agentCalls++;
    setTimeout(() => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { kind: 'unavailable', message: 'slow test agent' } }));
    }, 15_000).unref();
  });
  await new Promise<void>((r) => slowAgent.listen(join(root, 'agent.sock'), r));
});

afterAll(async () => {
  for (const c of daemons.values()) c.kill('SIGKILL');
  slowAgent?.closeAllConnections();
  slowAgent?.close();
  await etcd?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('two controllers on one etcd', () => {
  let active = '';
  let standby = '';

  it('elects one; the other stands by, answering 421 with the active one and serving GET /v1/cluster', async () => {
    active = await activeOf(['ctl1', 'ctl2']);
    standby = active === 'ctl1' ? 'ctl2' : 'ctl1';
    const s = await view(standby);
    expect(s.store).toBe('etcd');
    expect(s.self.role).toBe('standby');
    expect(s.active).toMatchObject({ name: active, address: `unix://${sock(active)}` });
    // Drills find the active process this way.
    expect(s.active?.pid).toBe(daemons.get(active)!.pid);
    expect(s.members).toHaveLength(1);
    expect(s.members[0]!.healthy).toBe(true);
    const refused = await api(standby)
      .get('/v1/vms', AnyAnswerSchema)
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(NotActiveError);
    expect((refused as NotActiveError).active).toBe(`unix://${sock(active)}`);
  });

  it('the CLI with both sockets reaches the active one whichever comes first', async () => {
    const created = await runCli(
      ['token', 'create', 'itctl-reader', '--role', 'read-only', '--json'],
      env(`${sock(standby)},${sock(active)}`),
    );
    expect(created.code, created.stderr).toBe(0);
    const listed = await runCli(['token', 'list', '--json'], env(`${sock(active)},${sock(standby)}`));
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout).map((t: { name: string }) => t.name)).toContain('itctl-reader');
    const status = await runCli(['cluster', 'status'], env(`${sock(standby)},${sock(active)}`));
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`this controller: ${standby} .*: standby`));
    expect(status.stdout).toMatch(new RegExp(`active controller: ${active} `));
  });

  it('cancels a task running when the active role is lost (etcd gone), and says why', async () => {
    const spec = `version: 1
hosts: [{ name: host1, agent: "unix://${join(root, 'agent.sock')}" }]
networks: [{ name: natnet, host: host1, mode: nat, cidr: 10.10.0.0/24 }]
`;
    const { taskId } = await api(active).post(
      '/v1/apply',
      { spec, source: 'itctl.yaml' },
      TaskAcceptedSchema,
    );
    // Once the apply waits on the agent (15 s), etcd goes: the controller loses the role within its lease.
    await waitFor('the apply to ask the agent', async () => (agentCalls > 0 ? true : undefined));
    expect((await api(active).get(`/v1/tasks/${taskId}`, TaskViewSchema)).state).toBe('running');
    await etcd.stop(true);
    const t0 = Date.now();
    let ended: TaskView;
    let lostMs: number;
    try {
      await waitFor('the active controller to step down', async () =>
        (await view(active)).self.role === 'standby' ? true : undefined,
      );
      lostMs = Date.now() - t0;
      // The task is polled on the controller that ran it (a standby serves its own tasks).
      ended = await waitFor('the apply to end', async () => {
        const t = await api(active).get(`/v1/tasks/${taskId}`, TaskViewSchema);
        return t.state === 'running' ? undefined : t;
      });
    } finally {
      await etcd.restart();
    }
    console.log(`${active} stepped down ${lostMs} ms after etcd stopped; the apply: ${ended.error?.message}`);
    expect(ended.state).toBe('cancelled');
    expect(ended.error?.kind).toBe('not-active');
    expect(ended.error?.message).toMatch(new RegExp(`${active} lost the active role`));
    // etcd back: one of them is active again.
    active = await activeOf(['ctl1', 'ctl2']);
    standby = active === 'ctl1' ? 'ctl2' : 'ctl1';
  });

  it('SIGKILL of the active one: the standby takes over and sees the state written before', async () => {
    const victim = daemons.get(active)!;
    const t0 = Date.now();
    victim.kill('SIGKILL');
    // A CLI call made during the takeover: the standby names the dead one until its lease ends; the CLI waits.
    const during = runCli(['token', 'list', '--json'], env(`${sock(standby)},${sock(active)}`));
    await waitFor('the standby to become active', async () =>
      (await view(standby)).self.role === 'active' ? true : undefined,
    );
    const takeoverMs = Date.now() - t0;
    console.log(`controller takeover after SIGKILL of ${active}: ${takeoverMs} ms`);
    expect(takeoverMs).toBeLessThan(30_000);
    const v = await view(standby);
    expect(v.active?.name).toBe(standby);
    const answered = await during;
    expect(answered.code, answered.stderr).toBe(0);
    expect(JSON.parse(answered.stdout).map((t: { name: string }) => t.name)).toContain('itctl-reader');
    // The dead one first in the list: the CLI goes on to the survivor, which has the token.
    const listed = await runCli(['token', 'list', '--json'], env(`${sock(active)},${sock(standby)}`));
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout).map((t: { name: string }) => t.name)).toContain('itctl-reader');
  });

  it('SIGTERM of the active one resigns: the restarted controller takes over without waiting for the lease', async () => {
    const [survivor, restarted] = [standby, active];
    await startController(restarted);
    expect((await view(restarted)).self.role).toBe('standby');
    const leaving = daemons.get(survivor)!;
    const exited = new Promise<number | null>((r) => leaving.once('exit', (code) => r(code)));
    const t0 = Date.now();
    leaving.kill('SIGTERM');
    await waitFor('the restarted controller to become active', async () =>
      (await view(restarted)).self.role === 'active' ? true : undefined,
    );
    console.log(`controller takeover after SIGTERM of ${survivor} (resigned): ${Date.now() - t0} ms`);
    expect(await exited).toBe(0);
  });
});
