import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../exec/runner.js';
import { NotActiveError } from '../../shared/errors.js';
import { setAgentTrust } from '../agents.js';
import { createControllerApi } from '../api.js';
import { Controller } from '../controller.js';
import { HostCredentials } from '../pki/service.js';
import { SqliteStore } from '../store/sqlite.js';
import { TaskManager } from '../tasks.js';
import { ClusterViewSchema } from '../wire-cluster.js';
import { activeOnly, STANDBY_ROUTES } from './active.js';
import { FakeCoordination } from './fake-coordination.test-util.js';
import { ClusterRuntime, controllerIdentity, pidOf, standaloneRuntime } from './runtime.js';
import type { ActiveService } from './types.js';

/** An active-only service that records what it was told. */
function recorder(name = 'recorder'): ActiveService & { log: string[] } {
  const log: string[] = [];
  return {
    name,
    log,
    start: () => log.push('start'),
    stop: async () => {
      log.push('stop');
    },
  };
}

/** A task that runs until cancelled (as an apply between steps would), then throws as apply does. */
function longTask(tasks: TaskManager): string {
  return tasks.start('apply', async (ctx) => {
    await new Promise((r) => ctx.signal.addEventListener('abort', r));
    throw new Error('cancelled after 1 of 3 steps; apply again to converge');
  });
}

describe('cluster runtime', () => {
  it('with SQLite is active at once and runs its services', async () => {
    const tasks = new TaskManager();
    const r = standaloneRuntime(tasks, 'ctl0', 'unix:///run/ctl0.sock');
    const s = recorder();
    r.addActiveService(s);
    await r.settled();
    expect(r.isActive()).toBe(true);
    expect(s.log).toEqual(['start']);
    const v = ClusterViewSchema.parse(await r.view());
    expect(v).toMatchObject({ store: 'sqlite', self: { name: 'ctl0', role: 'active', pid: process.pid } });
    expect(v.active?.pid).toBe(process.pid);
    await r.close();
    expect(s.log).toEqual(['start', 'stop']);
  });

  it('stands by until elected, then starts its services; a loss stops them, cancels tasks and refuses writes', async () => {
    const coordination = new FakeCoordination();
    const tasks = new TaskManager();
    const self = controllerIdentity('ctl1', 'unix:///run/ctl1.sock');
    const r = new ClusterRuntime({ self, coordination, tasks });
    const s = recorder();
    r.addActiveService(s);
    const store = activeOnly(new SqliteStore(':memory:'), () => r.assertActive());
    r.start();
    await r.settled();
    expect(r.isActive()).toBe(false);
    expect(s.log).toEqual([]);
    await expect(store.put('k', 1)).rejects.toBeInstanceOf(NotActiveError);

    coordination.elect(self.id);
    await r.settled();
    expect(r.isActive()).toBe(true);
    expect(s.log).toEqual(['start']);
    await store.put('k', 1);
    expect(await store.get('k')).toBe(1);
    const id = longTask(tasks);

    coordination.lose('its election lease ran out');
    // Writes stop at once, before the services have even been told.
    expect(r.isActive()).toBe(false);
    await expect(store.appendEvent('apply', 'late')).rejects.toThrow(/ctl1 is not the active controller/);
    await expect(store.putIf('k', 2, null)).rejects.toBeInstanceOf(NotActiveError);
    await r.settled();
    expect(s.log).toEqual(['start', 'stop']);
    const t = tasks.get(id);
    expect(t.state).toBe('cancelled');
    expect(t.error?.kind).toBe('not-active');
    expect(t.error?.message).toMatch(
      /ctl1 lost the active role \(its election lease ran out\).*next apply.*converges; the task stopped: cancelled after 1 of 3 steps/,
    );
    // Reads still pass; the value written while active stays.
    expect(await store.get('k')).toBe(1);

    // The campaign goes on: elected again, the services start again.
    coordination.elect(self.id);
    await r.settled();
    expect(s.log).toEqual(['start', 'stop', 'start']);
    await r.close();
    expect(s.log).toEqual(['start', 'stop', 'start', 'stop']);
    expect(coordination.candidates[0]!.resigned).toBe(true);
    expect(coordination.closed).toBe(true);
  });

  it('starts a service registered while active at once, and events after close are ignored', async () => {
    const coordination = new FakeCoordination();
    const tasks = new TaskManager();
    const self = controllerIdentity('ctl1', 'unix:///run/ctl1.sock');
    const r = new ClusterRuntime({ self, coordination, tasks });
    r.start();
    coordination.elect(self.id);
    const late = recorder('late');
    r.addActiveService(late);
    await r.settled();
    expect(late.log).toEqual(['start']);
    const events = coordination.candidates[0]!.events;
    await r.close();
    events.elected();
    await r.settled();
    expect(r.isActive()).toBe(false);
    expect(late.log).toEqual(['start', 'stop']);
  });

  it('names the active controller for each kind of client, and never itself once it lost', async () => {
    const coordination = new FakeCoordination();
    const tasks = new TaskManager();
    const me = controllerIdentity('ctl1', 'unix:///run/ctl1.sock', 'https://10.0.0.1:7070');
    const other = controllerIdentity('ctl2', 'unix:///run/ctl2.sock', 'https://10.0.0.2:7070');
    const r = new ClusterRuntime({ self: me, coordination, tasks });
    r.start();
    coordination.campaign(other, { elected: () => {}, lost: () => {} });
    expect(await r.activeFor('unix-socket')).toBeUndefined();
    coordination.elect(other.id);
    await new Promise((res) => setTimeout(res, 600)); // past the active controller's cache
    expect(await r.activeFor('unix-socket')).toEqual({ name: 'ctl2', address: 'unix:///run/ctl2.sock' });
    expect(await r.activeFor('tcp')).toEqual({ name: 'ctl2', address: 'https://10.0.0.2:7070' });
    // The election still names this controller just after it lost: no one to send a client to.
    coordination.active = me;
    await new Promise((res) => setTimeout(res, 600));
    expect(await r.activeFor('unix-socket')).toBeUndefined();
    await r.close();
  });

  it("shows etcd's members, host leases and what it could not learn", async () => {
    const coordination = new FakeCoordination();
    const tasks = new TaskManager();
    const self = controllerIdentity('ctl1', 'unix:///run/ctl1.sock');
    const r = new ClusterRuntime({ self, coordination, tasks });
    r.start();
    coordination.elect(self.id);
    coordination.members_ = [
      { name: 'e1', endpoint: 'http://127.0.0.1:2379', healthy: true, isLeader: true },
    ];
    coordination.hosts = [
      {
        host: 'host2',
        value: { host: 'host2', leaseId: '7', since: '2026-01-01T00:00:00.000Z', heartbeatSeconds: 5 },
        seenAt: Date.now() - 4_000,
      },
    ];
    const v = ClusterViewSchema.parse(await r.view());
    expect(v.store).toBe('etcd');
    expect(v.self.role).toBe('active');
    expect(v.active?.name).toBe('ctl1');
    expect(v.members).toHaveLength(1);
    expect(v.hosts[0]).toMatchObject({ host: 'host2', leaseId: '7', heartbeatSeconds: 5 });
    expect(v.hosts[0]!.ageMs).toBeGreaterThanOrEqual(4_000);
    expect(v.problems).toEqual([]);
    coordination.failure = new Error('etcd: no member answers');
    const down = ClusterViewSchema.parse(await r.view());
    expect(down.active).toBeUndefined();
    expect(down.problems).toHaveLength(3);
    expect(down.problems[0]).toMatch(/the active controller: etcd: no member answers/);
    await r.close();
  });

  it('reads the pid from a controller id', () => {
    expect(pidOf('ctl1/4242/ab12cd34')).toBe(4242);
    expect(pidOf('garbage')).toBeUndefined();
    expect(pidOf(controllerIdentity('x', 'unix:///s').id)).toBe(process.pid);
  });
});

describe('standby gate', () => {
  const pkiDir = mkdtempSync(join(tmpdir(), 'vmlink-standby-pki-'));
  const coordination = new FakeCoordination();
  const tasks = new TaskManager();
  const me = controllerIdentity('ctl1', 'unix:///run/ctl1.sock', 'https://10.0.0.1:7070');
  const other = controllerIdentity('ctl2', 'unix:///run/ctl2.sock', 'https://10.0.0.2:7070');
  const runtime = new ClusterRuntime({ self: me, coordination, tasks });
  let local: FastifyInstance;
  let tcp: FastifyInstance;
  const auth = { authorization: 'Bearer s3cret-bootstrap-token' };
  beforeAll(async () => {
    const credentials = await HostCredentials.open(pkiDir);
    const store = new SqliteStore(':memory:');
    const controller = new Controller(
      activeOnly(store, () => runtime.assertActive()),
      new RecordingRunner(),
      {
        credentials,
      },
    );
    local = await createControllerApi(controller, tasks, { cluster: runtime });
    tcp = await createControllerApi(controller, tasks, {
      cluster: runtime,
      token: 's3cret-bootstrap-token',
    });
    runtime.start();
  });
  afterAll(async () => {
    setAgentTrust(undefined);
    await local.close();
    await tcp.close();
    await runtime.close();
    rmSync(pkiDir, { recursive: true, force: true });
  });

  it('answers 421 naming the active controller by the listener it was asked on; serves only its own routes', async () => {
    coordination.campaign(other, { elected: () => {}, lost: () => {} });
    coordination.elect(other.id);
    const vms = await local.inject({ method: 'GET', url: '/v1/vms' });
    expect(vms.statusCode).toBe(421);
    expect(vms.json().error).toMatchObject({ kind: 'not-active', subject: 'unix:///run/ctl2.sock' });
    expect(vms.json().error.message).toMatch(
      /ctl1 is a standby; the active controller is ctl2 at unix:\/\/\/run\/ctl2.sock/,
    );
    const apply = await tcp.inject({
      method: 'POST',
      url: '/v1/apply',
      payload: { spec: 'version: 1' },
      headers: auth,
    });
    expect(apply.statusCode).toBe(421);
    expect(apply.json().error.subject).toBe('https://10.0.0.2:7070');
    // Authentication comes first: no credential, no pointer.
    expect((await tcp.inject({ method: 'GET', url: '/v1/vms' })).statusCode).toBe(401);
    for (const url of ['/v1/health', '/v1/cluster', '/openapi.json'])
      expect((await local.inject({ method: 'GET', url })).statusCode, url).toBe(200);
    expect(STANDBY_ROUTES).toContain('GET /v1/tasks/:id');
    const cluster = ClusterViewSchema.parse(
      (await local.inject({ method: 'GET', url: '/v1/cluster' })).json(),
    );
    expect(cluster.self.role).toBe('standby');
    expect(cluster.active?.name).toBe('ctl2');
    // An unknown path is a 404 from any controller.
    expect((await local.inject({ method: 'GET', url: '/v1/nothing-here' })).statusCode).toBe(404);
  });

  it('says so when no controller is active, with no address to follow', async () => {
    coordination.lose();
    await new Promise((res) => setTimeout(res, 600)); // past the active controller's cache
    const r = await local.inject({ method: 'GET', url: '/v1/status' });
    expect(r.statusCode).toBe(421);
    expect(r.json().error.subject).toBeUndefined();
    expect(r.json().error.message).toMatch(/no controller is active right now/);
  });

  it('serves everything once elected, and reports a task it ran as cancelled after a loss', async () => {
    coordination.elect(me.id);
    await runtime.settled();
    expect((await local.inject({ method: 'GET', url: '/v1/vms' })).statusCode).toBe(200);
    const id = longTask(tasks);
    coordination.lose('etcd unreachable for 3 s');
    await runtime.settled();
    const t = await local.inject({ method: 'GET', url: `/v1/tasks/${id}` });
    expect(t.statusCode).toBe(200);
    expect(t.json()).toMatchObject({ state: 'cancelled', error: { kind: 'not-active' } });
    expect((await local.inject({ method: 'DELETE', url: `/v1/tasks/${id}` })).statusCode).toBe(421);
  });
});
