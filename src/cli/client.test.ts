import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setAgentTrust } from '../controller/agents.js';
import { createControllerApi } from '../controller/api.js';
import { activeOnly } from '../controller/cluster/active.js';
import { FakeCoordination } from '../controller/cluster/fake-coordination.test-util.js';
import { ClusterRuntime, controllerIdentity } from '../controller/cluster/runtime.js';
import { Controller } from '../controller/controller.js';
import { HostCredentials } from '../controller/pki/service.js';
import { SqliteStore } from '../controller/store/sqlite.js';
import { TaskManager } from '../controller/tasks.js';
import { ClusterViewSchema } from '../controller/wire-cluster.js';
import { RecordingRunner } from '../exec/runner.js';
import { NotActiveError, UnavailableError, VmlinkError } from '../shared/errors.js';
import { AnyAnswerSchema } from '../shared/http/client.js';
import { listen } from '../shared/http/server.js';
import { type ControllerClient, controllerAddresses, controllerClient, followPointer } from './client.js';

describe('controller address lists', () => {
  it('splits, trims and de-duplicates a --socket list; refuses plain http', () => {
    expect(controllerAddresses('/run/a.sock')).toEqual(['/run/a.sock']);
    expect(controllerAddresses(' /run/a.sock, /run/b.sock,,/run/a.sock ')).toEqual([
      '/run/a.sock',
      '/run/b.sock',
    ]);
    expect(() => controllerAddresses(',')).toThrow(/names no controller/);
    expect(() => controllerAddresses('/run/a.sock,http://10.0.0.1:7070')).toThrow(/speaks only TLS/);
  });

  it('follows a pointer of the same kind only', () => {
    expect(followPointer('/run/a.sock', 'unix:///run/b.sock')).toBe('/run/b.sock');
    expect(followPointer('/run/a.sock', 'https://10.0.0.2:7070')).toBeUndefined();
    expect(followPointer('/run/a.sock', 'unix:///run/../etc/b.sock')).toBeUndefined();
    expect(followPointer('/run/a.sock', 'unix://relative.sock')).toBeUndefined();
    expect(followPointer('/run/a.sock', undefined)).toBeUndefined();
    expect(followPointer('https://10.0.0.1:7070', 'https://10.0.0.2:7070')).toBe('https://10.0.0.2:7070');
    expect(followPointer('https://10.0.0.1:7070', 'unix:///run/b.sock')).toBeUndefined();
    expect(followPointer('https://10.0.0.1:7070', 'https://u:p@10.0.0.2:7070')).toBeUndefined();
    expect(followPointer('https://10.0.0.1:7070', 'https://10.0.0.2:7070/x')).toBeUndefined();
    expect(followPointer('https://10.0.0.1:7070', 'https://10.0.0.2')).toBeUndefined();
  });

  it('needs VMLINK_CA for an https address in a list before any call', () => {
    const saved = process.env.VMLINK_CA;
    delete process.env.VMLINK_CA;
    try {
      expect(() => controllerClient('/run/a.sock,https://10.0.0.1:7070')).toThrow(/set VMLINK_CA/);
    } finally {
      if (saved !== undefined) process.env.VMLINK_CA = saved;
    }
  });
});

describe('ControllerClient against two controllers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-client-'));
  const sock = (n: string) => join(dir, `${n}.sock`);
  const coordination = new FakeCoordination();
  const apps: FastifyInstance[] = [];
  const runtimes: ClusterRuntime[] = [];
  /** Starts controller `name` on its socket, a candidate of the shared fake election; returns its identity. */
  const start = async (name: string, credentials: HostCredentials, address = `unix://${sock(name)}`) => {
    const self = controllerIdentity(name, address);
    const runtime = new ClusterRuntime({ self, coordination, tasks: new TaskManager() });
    const store = activeOnly(new SqliteStore(':memory:'), () => runtime.assertActive());
    const controller = new Controller(store, new RecordingRunner(), { credentials });
    const app = await createControllerApi(controller, new TaskManager(), {
      cluster: runtime,
    });
    await listen(app, `unix://${sock(name)}`);
    runtime.start();
    apps.push(app);
    runtimes.push(runtime);
    return self;
  };
  const client = (list: string, electionWaitMs = 0) =>
    controllerClient(list, undefined, { electionWaitMs }) as ControllerClient;
  let b: ReturnType<typeof controllerIdentity>;
  const whoAnswers = async (c: ControllerClient) => {
    await c.get('/v1/vms', AnyAnswerSchema);
    return c.answering;
  };

  beforeAll(async () => {
    const credentials = await HostCredentials.open(join(dir, 'pki'));
    await start('ctla', credentials);
    b = await start('ctlb', credentials);
    // ctlc points its clients at an https address: a socket client must not follow it.
    await start('ctlc', credentials);
    coordination.elect(b.id);
    await Promise.all(runtimes.map((r) => r.settled()));
  });
  afterAll(async () => {
    setAgentTrust(undefined);
    for (const a of apps) await a.close();
    for (const r of runtimes) await r.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reaches the active controller whichever comes first in the list, and stays with it', async () => {
    const c = client(`${sock('ctla')},${sock('ctlb')}`);
    expect(await whoAnswers(c)).toBe(sock('ctlb'));
    const d = client(`${sock('ctlb')},${sock('ctla')}`);
    expect(await whoAnswers(d)).toBe(sock('ctlb'));
    // One standby socket alone: its pointer is followed.
    expect(await whoAnswers(client(sock('ctla')))).toBe(sock('ctlb'));
    // A standby answers GET /v1/cluster itself.
    const v = await client(sock('ctla')).get('/v1/cluster', ClusterViewSchema);
    expect(v.self).toMatchObject({ name: 'ctla', role: 'standby' });
    expect(v.active?.name).toBe('ctlb');
  });

  it('skips a controller that cannot be reached', async () => {
    const c = client(`${sock('gone')},${sock('ctla')}`);
    expect(await whoAnswers(c)).toBe(sock('ctlb'));
  });

  it('names every address and why when none answers', async () => {
    const err = await client(`${sock('gone')},${sock('gone2')}`)
      .get('/v1/vms', ClusterViewSchema)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toMatch(
      /no controller in .*gone\.sock,.*gone2\.sock can be reached:\n {2}.*gone\.sock: cannot reach/,
    );
    // One address: its own error, as before.
    const one = await client(sock('gone'))
      .get('/v1/vms', ClusterViewSchema)
      .catch((e: unknown) => e);
    expect((one as Error).message).toMatch(/cannot reach the controller at unix:\/\/.*gone\.sock/);
  });

  it('follows a pointer once, never across kinds, and says why when no one is active', async () => {
    // ctlb loses: the standbys know no active controller.
    coordination.lose();
    await new Promise((r) => setTimeout(r, 600)); // past the standbys' cache of the active controller
    const none = await client(`${sock('ctla')},${sock('ctlb')}`)
      .get('/v1/vms', ClusterViewSchema)
      .catch((e: unknown) => e);
    expect(none).toBeInstanceOf(NotActiveError);
    expect((none as Error).message).toMatch(
      /no controller in .* is active or reachable:[\s\S]*no controller is active right now/,
    );
    // The election names a controller whose address is https: a socket client does not follow it.
    coordination.active = controllerIdentity('remote', 'https://10.0.0.9:7070');
    await new Promise((r) => setTimeout(r, 600));
    const cross = await client(sock('ctla'))
      .get('/v1/vms', ClusterViewSchema)
      .catch((e: unknown) => e);
    expect(cross).toBeInstanceOf(VmlinkError);
    expect((cross as VmlinkError).kind).toBe('not-active');
    // Two standbys pointing at each other: followed once, no loop.
    coordination.active = { ...controllerIdentity('ctla', `unix://${sock('ctla')}`), id: 'someone-else' };
    await new Promise((r) => setTimeout(r, 600));
    const loop = await client(sock('ctlc'))
      .get('/v1/vms', ClusterViewSchema)
      .catch((e: unknown) => e);
    expect((loop as VmlinkError).kind).toBe('not-active');
  });

  it('waits through an election: a call made while no one is active goes through once one is', async () => {
    coordination.active = undefined;
    await new Promise((r) => setTimeout(r, 600));
    const t0 = Date.now();
    setTimeout(() => coordination.elect(b.id), 1_000);
    const c = client(`${sock('ctla')},${sock('ctlc')}`, 10_000);
    await c.get('/v1/vms', AnyAnswerSchema);
    expect(c.answering).toBe(sock('ctlb'));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_000);
    // The active one named but dead (etcd still names it until its lease ends): a standby's answer, not a failure.
    coordination.active = controllerIdentity('dead', `unix://${sock('dead')}`);
    await new Promise((r) => setTimeout(r, 600));
    const dead = await client(sock('ctla'))
      .get('/v1/vms', AnyAnswerSchema)
      .catch((e: unknown) => e);
    expect(dead).toBeInstanceOf(NotActiveError);
    expect((dead as Error).message).toMatch(/dead\.sock, which does not answer/);
  });
});
