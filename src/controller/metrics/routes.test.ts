import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../exec/runner.js';
import { createControllerApi } from '../api.js';
import { Controller } from '../controller.js';
import type { AgentPort } from '../hosts.js';
import { SpecStore } from '../spec-store.js';
import { SqliteStore } from '../store/sqlite.js';
import { TaskManager } from '../tasks.js';

const SPEC = `version: 1
hosts: [{ name: host1, agent: "unix:///nonexistent/agent.sock" }]
`;

describe('GET /v1/metrics', () => {
  let tcp: FastifyInstance;
  let controller: Controller;
  const tasks = new TaskManager();
  beforeAll(async () => {
    // An agent that answers nothing: the apply fails at its plan, which the apply histogram must count.
    const dead = {
      report: async () => {
        throw new Error('agent of host1 is down');
      },
    } as unknown as AgentPort;
    controller = new Controller(new SqliteStore(':memory:'), new RecordingRunner(), { agents: () => dead });
    tcp = await createControllerApi(controller, tasks, { token: 'bootstrap-token-0123456789' });
  });
  afterAll(async () => {
    await tcp.close();
  });

  it('serves the page in text format 0.0.4 to a read-only token, with the outcome of a failed apply', async () => {
    const created = await tcp.inject({
      method: 'POST',
      url: '/v1/tokens',
      payload: { name: 'prometheus', role: 'read-only' },
      headers: { authorization: 'Bearer bootstrap-token-0123456789' },
    });
    expect(created.statusCode, created.body).toBe(200);
    const auth = { authorization: `Bearer ${created.json().token}` };
    expect((await tcp.inject({ method: 'GET', url: '/v1/metrics' })).statusCode).toBe(401);

    const ctx = { progress: () => undefined, signal: new AbortController().signal };
    await expect(controller.apply(SPEC, 'spec.yaml', ctx)).rejects.toThrow(/host1/);
    const r = await tcp.inject({ method: 'GET', url: '/v1/metrics', headers: auth });
    expect(r.statusCode, r.body).toBe(200);
    expect(r.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(r.body).toContain('vmlink_apply_duration_seconds_count{outcome="failed"} 1');
    expect(r.body).not.toContain('outcome="succeeded"');
    // Nothing was applied: no host to collect yet.
    expect(r.body).not.toContain('vmlink_host_up{');
  });

  it('counts a verify by its outcome, and its cells by result', async () => {
    await new SpecStore(controller.store).recordAttempt(SPEC, 'spec.yaml');
    const ctx = { progress: () => undefined, signal: new AbortController().signal };
    const v = await controller.verify(ctx).then(
      (r) => (r.ok ? 'ok' : 'mismatch'),
      () => 'failed',
    );
    const page = await controller.metrics.render();
    expect(page).toContain(`vmlink_verify_duration_seconds_count{outcome="${v}"} 1`);
    if (v !== 'failed') expect(page).toMatch(/^vmlink_verify_cells\{result="ok"\} \d+$/m);
  });
});
