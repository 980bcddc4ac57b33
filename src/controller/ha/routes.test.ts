import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterSpec, task, vm } from '../../../test/helpers/cluster-spec.js';
import { FakeFleet } from '../../../test/helpers/fake-agents.js';
import { FakeCoordination } from '../../../test/helpers/fake-coordination.js';
import { renderHaStatus } from '../../cli/ha-commands.js';
import { RecordingRunner } from '../../exec/runner.js';
import { createControllerApi } from '../api.js';
import { Controller } from '../controller.js';
import { SqliteStore } from '../store/sqlite.js';
import { TaskManager } from '../tasks.js';
import { HaViewSchema, MaintenanceAnswerSchema } from '../wire-ha.js';

describe('HA routes', () => {
  let app: FastifyInstance;
  const fleet = new FakeFleet();
  const store = new SqliteStore(':memory:');
  beforeAll(async () => {
    const coordination = new FakeCoordination();
    coordination.setLive(['h1', 'h3']);
    const controller = new Controller(store, new RecordingRunner(), { agents: fleet.agents, coordination });
    await controller.apply(
      clusterSpec(vm('web', ', host: h1, ha: { state: started, priority: 3 }') + vm('pet', ', host: h1')),
      'c.yaml',
      task(),
    );
    app = await createControllerApi(controller, new TaskManager());
  });
  afterAll(async () => {
    await app.close();
    fleet.close();
    await store.close();
  });

  it('GET /v1/ha shows owners with tokens, policies, leases (a failed host) and the last decisions', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/ha?decisions=5' });
    expect(r.statusCode).toBe(200);
    const v = HaViewSchema.parse(r.json());
    expect(v.cluster).toBe(true);
    expect(v.vms.map((x) => [x.name, x.owner?.host, x.policy, x.priority])).toEqual([
      ['web', 'h1', 'started', 3],
      ['pet', 'h1', 'disabled', 0],
    ]);
    expect(v.hosts.map((h) => [h.name, h.live])).toEqual([
      ['h1', true],
      ['h2', false],
      ['h3', true],
    ]);
    expect(v.decisions.map((e) => e.kind)).toEqual(['ha.place', 'ha.place']);
    const text = renderHaStatus(v);
    expect(text).toMatch(/web\s+h1\s+\d+\s+started\s+3\s+running/);
    expect(text).toMatch(/h2\s+FAILED/);
  });

  it('PUT /v1/hosts/:name/maintenance says what moves, and refuses unknown hosts and bad bodies', async () => {
    const on = await app.inject({ method: 'PUT', url: '/v1/hosts/h1/maintenance', payload: { on: true } });
    expect(on.statusCode).toBe(200);
    expect(MaintenanceAnswerSchema.parse(on.json())).toEqual({
      host: 'h1',
      on: true,
      moves: ['web'],
      stays: ['pet'],
    });
    const v = HaViewSchema.parse((await app.inject({ method: 'GET', url: '/v1/ha' })).json());
    expect(v.hosts[0]).toMatchObject({ name: 'h1', maintenance: { by: 'local-socket' } });
    const off = await app.inject({ method: 'PUT', url: '/v1/hosts/h1/maintenance', payload: { on: false } });
    expect(off.json()).toEqual({ host: 'h1', on: false, moves: [], stays: ['pet', 'web'] });
    expect(
      (await app.inject({ method: 'PUT', url: '/v1/hosts/nope/maintenance', payload: { on: true } }))
        .statusCode,
    ).toBe(404);
    expect(
      (await app.inject({ method: 'PUT', url: '/v1/hosts/h1/maintenance', payload: { on: 'yes' } }))
        .statusCode,
    ).toBe(422);
  });
});
