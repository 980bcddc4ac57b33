import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../exec/runner.js';
import { errorStatus } from '../shared/errors.js';
import { generateKeyPair } from '../shared/tls.js';
import { createCsr } from '../shared/x509.js';
import { setAgentTrust } from './agents.js';
import { createControllerApi } from './api.js';
import { Controller } from './controller.js';
import { HostCredentials } from './pki/service.js';
import { SqliteStore } from './store/sqlite.js';
import { TaskManager } from './tasks.js';
import { DoctorReportSchema } from './wire.js';

const SPEC = `version: 1
hosts: [{ name: host1, agent: "unix:///nonexistent/agent.sock" }]
networks: [{ name: natnet, host: host1, mode: nat, cidr: 10.10.0.0/24 }]
`;

describe('controller API', () => {
  let app: FastifyInstance;
  let tcp: FastifyInstance;
  const tasks = new TaskManager();
  const pkiDir = mkdtempSync(join(tmpdir(), 'vmlink-api-pki-'));
  beforeAll(async () => {
    const credentials = await HostCredentials.open(pkiDir);
    const controller = new Controller(new SqliteStore(':memory:'), new RecordingRunner(), { credentials });
    app = await createControllerApi(controller, tasks);
    tcp = await createControllerApi(controller, tasks, { token: 's3cret' });
  });
  afterAll(async () => {
    setAgentTrust(undefined);
    await app.close();
    await tcp.close();
    rmSync(pkiDir, { recursive: true, force: true });
  });

  it('opens only the CA and the join route without the user token; a join token is spent once', async () => {
    const ca = await tcp.inject({ method: 'GET', url: '/v1/pki/ca' });
    expect(ca.statusCode).toBe(200);
    expect(ca.json().fingerprint).toMatch(/^[0-9a-f]{64}$/);
    const url = '/v1/hosts/host1/join-token';
    expect((await tcp.inject({ method: 'POST', url, payload: {} })).statusCode).toBe(401);
    const t = await tcp.inject({
      method: 'POST',
      url,
      payload: {},
      headers: { authorization: 'Bearer s3cret' },
    });
    expect(t.statusCode).toBe(200);
    expect(t.json().caFingerprint).toBe(ca.json().fingerprint);
    const csr = await createCsr('host1', await generateKeyPair());
    const payload = { host: 'host1', token: t.json().token, csr };
    const joined = await tcp.inject({ method: 'POST', url: '/v1/join', payload });
    expect(joined.statusCode).toBe(200);
    expect(joined.json().ca).toBe(ca.json().ca);
    const again = await tcp.inject({ method: 'POST', url: '/v1/join', payload });
    expect(again.statusCode).toBe(401);
    expect(again.json().error.message).toMatch(/join of host host1 refused: the token was already used/);
  });

  it('serves an OpenAPI document describing its routes', async () => {
    const r = await app.inject({ method: 'GET', url: '/openapi.json' });
    const doc = r.json() as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/v1/plan',
        '/v1/apply',
        '/v1/verify',
        '/v1/vms/{name}/exec',
        '/v1/tasks/{id}',
      ]),
    );
  });

  it('rejects unknown fields and wrong types with 422', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/plan', payload: { spec: SPEC, extra: 1 } });
    expect(r.statusCode).toBe(422);
    expect(r.json().error.message).toMatch(/extra|unrecognized/i);
    const r2 = await app.inject({ method: 'POST', url: '/v1/vms/BAD;name/stop', payload: {} });
    expect(r2.statusCode).toBe(422);
  });

  it('returns every spec problem with its path', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/v1/apply',
      payload: {
        spec: SPEC.replace('10.10.0.0/24', '10.10.0.0/33').replace('natnet', 'Nat Net'),
        source: 'x.yaml',
      },
    });
    expect(r.statusCode).toBe(422);
    const paths = (r.json().error.issues as Array<{ path: string }>).map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(['networks[0].name', 'networks[0].cidr']));
  });

  it('says which agent it cannot reach (503)', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/plan', payload: { spec: SPEC } });
    expect(r.statusCode).toBe(503);
    expect(r.json().error.message).toContain('host1');
  });

  it('runs apply as a task whose failure is readable', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/apply', payload: { spec: SPEC } });
    expect(r.statusCode).toBe(202);
    const { taskId } = r.json() as { taskId: string };
    const done = await tasks.wait(taskId);
    expect(done.state).toBe('failed');
    expect(done.error?.kind).toBe('unavailable');
    const got = await app.inject({ method: 'GET', url: `/v1/tasks/${taskId}` });
    expect(got.json().state).toBe('failed');
  });

  it('answers 404 for unknown VMs and tasks', async () => {
    expect((await app.inject({ method: 'POST', url: '/v1/vms/ghost/start', payload: {} })).statusCode).toBe(
      404,
    );
    expect(
      (await app.inject({ method: 'GET', url: '/v1/tasks/5b0a4c4e-6a8f-4f3c-9a6e-1d2c3b4a5f60' })).statusCode,
    ).toBe(404);
  });

  it('requires the bearer token on a token-protected listener (401, kind unauthorized)', async () => {
    const health = (authorization?: string) =>
      tcp.inject({
        method: 'GET',
        url: '/v1/health',
        ...(authorization ? { headers: { authorization } } : {}),
      });
    // Missing, wrong of a different length, wrong of the same length, right token with another scheme.
    for (const auth of [undefined, 'Bearer wrong', 'Bearer s3creT', 'Basic s3cret']) {
      const r = await health(auth);
      expect(r.statusCode, auth).toBe(401);
      expect(r.json().error.kind, auth).toBe('unauthorized');
    }
    expect((await health('Bearer s3cret')).statusCode).toBe(200);
    expect(errorStatus.unauthorized).toEqual({ http: 401, exit: 9 });
  });

  it('lists the response schema of each route in its OpenAPI document', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as {
      paths: Record<string, Record<string, { responses: Record<string, { content?: unknown }> }>>;
    };
    const schemaOf = (path: string, method: string, status: string) =>
      (
        doc.paths[path]?.[method]?.responses[status]?.content as
          | { 'application/json': { schema: { properties?: Record<string, unknown>; items?: unknown } } }
          | undefined
      )?.['application/json'].schema;
    expect(Object.keys(schemaOf('/v1/status', 'get', '200')?.properties ?? {})).toEqual(
      expect.arrayContaining(['spec', 'hosts']),
    );
    expect(Object.keys(schemaOf('/v1/apply', 'post', '202')?.properties ?? {})).toEqual(['taskId']);
    expect(Object.keys(schemaOf('/v1/tasks/{id}', 'get', '200')?.properties ?? {})).toEqual(
      expect.arrayContaining(['state', 'progress', 'result', 'error']),
    );
    expect(Object.keys(schemaOf('/v1/doctor', 'get', '200')?.properties ?? {})).toEqual([
      'controller',
      'hosts',
      'storage',
      'diagnoses',
    ]);
    expect(schemaOf('/v1/vms', 'get', '200')?.items).toBeDefined();
    expect(Object.keys(schemaOf('/v1/plan', 'post', '4XX')?.properties ?? {})).toEqual(['error']);
    // Every route declares its answer.
    for (const [path, methods] of Object.entries(doc.paths))
      for (const [method, op] of Object.entries(methods))
        expect(
          Object.keys(op.responses).some((k) => k.startsWith('2')),
          `${method} ${path}`,
        ).toBe(true);
  });

  it('answers GET /v1/doctor with its own checks when no spec is applied', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/doctor' });
    expect(r.statusCode).toBe(200);
    const d = DoctorReportSchema.parse(r.json());
    expect(d.hosts).toEqual([]);
    expect(d.controller.map((c) => c.name)).toEqual(['controller node', 'controller root', 'spec']);
    expect(d.controller.find((c) => c.name === 'spec')?.detail).toMatch(/none applied/);
    expect(d.diagnoses).toEqual([]);
    // `?host=` names a spec host: none applied, so any name is unknown.
    const unknown = await app.inject({ method: 'GET', url: '/v1/doctor?host=h9' });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().error.message).toBe('host "h9" not found');
  });
});
