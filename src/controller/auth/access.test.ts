// Every route of the controller API over real TLS (HTTPS on a unix socket, the TCP listener's server and hooks):
// 401 without a valid token, 403 for a role or scope too narrow, an audit entry for every mutating call, and no token
// secret in the store, the audit trail or any answer. The route list comes from fastify, so a new route is covered.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../exec/runner.js';
import { createHttpApp, listen } from '../../shared/http/server.js';
import { createControllerApi } from '../api.js';
import { Controller } from '../controller.js';
import { HostCredentials } from '../pki/service.js';
import { SqliteStore } from '../store/sqlite.js';
import { TaskManager } from '../tasks.js';
import type { Role, TokenScopes } from '../wire-access.js';
import { installAccessControl, routesOf, type TaskEnd } from './access.js';
import { AuditLog } from './audit.js';
import { ROUTE_RULES, roleAllows, ruleFor } from './roles.js';
import { TokenStore } from './tokens.js';

const BOOTSTRAP = 'bootstrap-secret-0123456789';
const SPEC = `version: 1
hosts:
  - { name: host1, agent: "unix:///nonexistent/agent1.sock" }
  - { name: host2, agent: "unix:///nonexistent/agent2.sock" }
networks:
  - { name: net1, host: host1, mode: isolated, cidr: 10.10.0.0/24 }
  - { name: net2, host: host2, mode: isolated, cidr: 10.20.0.0/24 }
vms:
  - { name: web1, host: host1, nics: [{ network: net1 }] }
  - { name: db1, host: host2, nics: [{ network: net2 }] }
`;

const dir = mkdtempSync(join(tmpdir(), 'vmlink-access-'));
const socket = join(dir, 'api.sock');
const localSocket = join(dir, 'local.sock');
let store: SqliteStore;
let tokens: TokenStore;
let tcp: FastifyInstance;
let local: FastifyInstance;
let ca: string;
/** The tokens' clock, moved forward to expire them. */
let clockOffsetMs = 0;
const secrets: string[] = [BOOTSTRAP];

interface Answer {
  status: number;
  body: string;
}

/** One HTTPS request to the TLS listener on `socket` (or a plain one to the local socket). */
function call(method: string, path: string, auth?: string, body?: unknown, via = socket): Promise<Answer> {
  const payload = method === 'POST' ? JSON.stringify(body ?? {}) : undefined;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {
      ...(auth ? { authorization: auth } : {}),
      ...(payload
        ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }
        : {}),
    };
    const opts = { socketPath: via, path, method, headers, ca, checkServerIdentity: () => undefined };
    const req = via === socket ? request(opts) : httpRequest({ socketPath: via, path, method, headers });
    req.on('response', (res: IncomingMessage) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

const bearer = (t: string) => `Bearer ${t}`;
/** A token made through the API (as `vmlink token create` does), remembered as a secret to look for. */
async function token(name: string, role: Role, scopes: TokenScopes = {}, expiresInSeconds?: number) {
  const r = await call('POST', '/v1/tokens', bearer(BOOTSTRAP), {
    name,
    role,
    scopes,
    ...(expiresInSeconds ? { expiresInSeconds } : {}),
  });
  expect(r.status, r.body).toBe(200);
  const t = (JSON.parse(r.body) as { token: string }).token;
  // vmlt_<id>_<secret>: the secret is base64url and may itself contain '_', so split only at the first two.
  const secret = t.split('_').slice(2).join('_');
  expect(secret.length).toBeGreaterThanOrEqual(43);
  secrets.push(t, secret);
  return bearer(t);
}

/** A concrete path of a route pattern (`:name` -> web1, `:id` -> a UUID). */
const pathOf = (pattern: string, name = 'web1') =>
  pattern.replace(':name', name).replace(':id', '5b0a4c4e-6a8f-4f3c-9a6e-1d2c3b4a5f60');
const routes = () =>
  routesOf(tcp)
    .filter((r) => !r.startsWith('HEAD '))
    .map((r) => {
      const [method, pattern] = r.split(' ') as [string, string];
      return { method, pattern, rule: ruleFor(method, pattern)! };
    });

beforeAll(async () => {
  const credentials = await HostCredentials.open(join(dir, 'pki'));
  ca = credentials.pki.caPem;
  store = new SqliteStore(':memory:');
  tokens = new TokenStore(store, () => new Date(Date.now() + clockOffsetMs));
  const access = { tokens, audit: new AuditLog(store) };
  const controller = new Controller(store, new RecordingRunner(), { credentials });
  const tasks = new TaskManager();
  tcp = await createControllerApi(controller, tasks, { token: BOOTSTRAP, tls: credentials.own, access });
  local = await createControllerApi(controller, tasks, { access });
  await listen(tcp, `unix://${socket}`);
  await listen(local, `unix://${localSocket}`);
  await store.put('spec/current', { text: SPEC, source: 'spec.yaml', appliedAt: new Date().toISOString() });
});

afterAll(async () => {
  await tcp.close();
  await local.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the role table', () => {
  it('has an entry for every route, and no entry without a route', () => {
    const served = new Set(routesOf(tcp).map((r) => r.replace(/^HEAD /, 'GET ')));
    expect(served.size).toBeGreaterThan(25);
    for (const r of served) expect(ruleFor(...(r.split(' ') as [string, string])), r).toBeDefined();
    for (const entry of Object.keys(ROUTE_RULES)) expect(served, entry).toContain(entry);
  });
});

describe('the role policy', () => {
  const withRole = (role: string) =>
    Object.entries(ROUTE_RULES)
      .filter(([, r]) => r.role === role)
      .map(([k]) => k)
      .sort();
  it('gives read-only the GET routes only, operator VM power, exec, plan, verify and storage changes, admin the rest', () => {
    // The web console's own session calls change nothing but the caller's own browser session.
    const sessionCalls = ['POST /v1/ui/links', 'POST /v1/ui/logout'];
    for (const key of withRole('read-only')) if (!sessionCalls.includes(key)) expect(key).toMatch(/^GET /);
    expect(withRole('operator')).toEqual(
      [
        'DELETE /v1/tasks/:id',
        // Balancing (issue 13): live migrations of the plan.
        'POST /v1/balance/apply',
        'POST /v1/plan',
        'POST /v1/verify',
        'POST /v1/verify/throughput',
        'POST /v1/vms/:name/exec',
        'POST /v1/vms/:name/start',
        'POST /v1/vms/:name/stop',
        // Storage (issue 10): volume and snapshot changes, image import, VM snapshots.
        'POST /v1/volumes',
        'POST /v1/volumes/:pool/:name/resize',
        'POST /v1/volumes/:pool/:name/clone',
        'DELETE /v1/volumes/:pool/:name',
        'POST /v1/volumes/:pool/:name/snapshots',
        'POST /v1/volumes/:pool/:name/snapshots/:snap/rollback',
        'DELETE /v1/volumes/:pool/:name/snapshots/:snap',
        'POST /v1/images/import',
        'POST /v1/vms/:name/snapshots',
        'POST /v1/vms/:name/snapshots/:snap/rollback',
        'DELETE /v1/vms/:name/snapshots/:snap',
        // Backups (issue 12): runs, checks, syncs, pruning, restores and restore tests.
        'POST /v1/backups/run',
        'POST /v1/backups/verify',
        'POST /v1/backups/sync',
        'POST /v1/backups/prune',
        'POST /v1/restores',
        'POST /v1/restores/test',
        'DELETE /v1/restores/:name',
        // Alerts (issue 14): silences and acks.
        'POST /v1/alerts/silences',
        'DELETE /v1/alerts/silences/:id',
        'POST /v1/alerts/ack',
        // Live migration (issue 13).
        'POST /v1/vms/:name/migrate',
        // Live disk moves (issue 13).
        'POST /v1/vms/:name/disks/:disk/move',
      ].sort(),
    );
    // The web console's files and login page: public (the app holds no data; the link is the credential).
    expect(withRole('open')).toEqual(
      ['GET /ui', 'GET /ui/', 'GET /ui/*', 'GET /ui/login', 'GET /v1/pki/ca', 'POST /v1/join'].sort(),
    );
    expect(withRole('admin')).toEqual(
      expect.arrayContaining(['GET /v1/tokens', 'GET /v1/audit', 'POST /v1/apply']),
    );
    expect(ruleFor('DELETE', '/v1/secrets/:name')).toEqual({ role: 'admin', scope: 'unscoped' });
    // Volumes are in no token scope: a token limited to some VMs may not change them; VM snapshots follow the VM.
    expect(ruleFor('POST', '/v1/volumes/:pool/:name/resize')?.scope).toBe('unscoped');
    expect(ruleFor('POST', '/v1/vms/:name/snapshots')?.scope).toBe('vm');
    expect(ruleFor('GET', '/v1/capacity')).toEqual({ role: 'read-only', scope: 'any' });
    // Backup keys are an admin's; objectives and lists anyone's.
    expect(ruleFor('POST', '/v1/backups/keys')?.role).toBe('admin');
    expect(ruleFor('POST', '/v1/backups/keys/import')?.role).toBe('admin');
    expect(ruleFor('GET', '/v1/backups/status')).toEqual({ role: 'read-only', scope: 'any' });
  });
});

describe('a route the role table lacks', () => {
  it('stops the API from being built, naming the route', async () => {
    const app = createHttpApp();
    installAccessControl(app, {
      listener: 'unix-socket',
      tokens,
      audit: new AuditLog(store),
      context: { spec: async () => undefined, taskKind: () => undefined },
    });
    expect(() => app.get('/v1/unlisted', async () => ({}))).toThrow(
      /route GET \/v1\/unlisted has no entry in the role table/,
    );
    await app.close();
  });

  it('answers 401 to a stranger on a path no route serves, and 404 to a token holder', async () => {
    expect((await call('GET', '/v1/nowhere')).status).toBe(401);
    expect((await call('GET', '/v1/nowhere', bearer(BOOTSTRAP))).status).toBe(404);
  });
});

describe('authentication on the TLS listener', () => {
  it('answers 401 on every route but the open ones without a valid token', async () => {
    const expired = await token('expired', 'admin', {}, 60);
    const revoked = await token('revoked', 'admin');
    const rv = await call('DELETE', '/v1/tokens/revoked', bearer(BOOTSTRAP));
    expect(rv.status, rv.body).toBe(200);
    clockOffsetMs = 61_000;
    const forged = `Bearer vmlt_${randomBytes(8).toString('hex')}_${randomBytes(32).toString('base64url')}`;
    // A known id with another secret: the hash decides, not the id.
    const wrongSecret = `${revoked.slice(0, -43)}${randomBytes(32).toString('base64url')}`;
    const bad: Array<[string, string | undefined, RegExp]> = [
      ['none', undefined, /missing bearer token/],
      ['wrong bootstrap', bearer('bootstrap-secret-0123456780'), /wrong bearer token/],
      ['other scheme', `Basic ${BOOTSTRAP}`, /malformed Authorization/],
      ['malformed', 'Bearer vmlt_zz', /malformed API token/],
      ['forged', forged, /unknown or revoked/],
      ['wrong secret', wrongSecret, /unknown or revoked/],
      ['expired', expired, /API token expired expired at/],
      ['revoked', revoked, /unknown or revoked/],
      ['oversized', `Bearer ${'a'.repeat(600)}`, /malformed/],
    ];
    let checked = 0;
    for (const { method, pattern, rule } of routes()) {
      if (rule.role === 'open') continue;
      for (const [what, auth, message] of bad) {
        const r = await call(method, pathOf(pattern), auth, {});
        expect(r.status, `${what}: ${method} ${pattern}`).toBe(401);
        const error = (JSON.parse(r.body) as { error: { kind: string; message: string } }).error;
        expect(error.kind).toBe('unauthorized');
        expect(error.message, `${what}: ${method} ${pattern}`).toMatch(message);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(200);
    clockOffsetMs = 0;
  });

  it('serves the open routes without a token', async () => {
    expect((await call('GET', '/v1/pki/ca')).status).toBe(200);
    // A join with a made-up token is refused by the join itself (its own one-time token), not by the API token.
    const j = await call('POST', '/v1/join', undefined, { host: 'host1', token: 'x'.repeat(43), csr: 'x' });
    expect(j.status).not.toBe(403);
  });
});

describe('authorization', () => {
  it('answers 403 to a role below the route, and lets the role itself through', async () => {
    const byRole = {
      'read-only': await token('reader', 'read-only'),
      operator: await token('oper', 'operator'),
      admin: await token('adm', 'admin'),
    } as const;
    for (const { method, pattern, rule } of routes()) {
      if (rule.role === 'open') continue;
      for (const role of ['read-only', 'operator', 'admin'] as const) {
        // Revoking and cancelling for real would spoil later calls; their refusals are what is checked here.
        if (method === 'DELETE' && roleAllows(role, rule.role)) continue;
        const r = await call(method, pathOf(pattern), byRole[role], {});
        const what = `${role}: ${method} ${pattern} (needs ${rule.role})`;
        if (roleAllows(role, rule.role)) expect([401, 403], what).not.toContain(r.status);
        else {
          expect(r.status, what).toBe(403);
          expect(JSON.parse(r.body).error.kind).toBe('forbidden');
          expect(JSON.parse(r.body).error.message).toMatch(new RegExp(`needs the ${rule.role} role`));
        }
      }
    }
  });

  it('refuses a scoped token the whole-spec routes and objects out of its scope', async () => {
    const scoped = await token('web-admin', 'admin', { vms: ['web*'] });
    for (const { method, pattern, rule } of routes()) {
      if (rule.scope !== 'unscoped' || rule.role === 'open') continue;
      const r = await call(method, pathOf(pattern), scoped, {});
      expect(r.status, `${method} ${pattern}`).toBe(403);
      expect(JSON.parse(r.body).error.message).toMatch(/needs a token without scopes/);
    }
    for (const { method, pattern, rule } of routes()) {
      if (rule.scope !== 'vm') continue;
      const out = await call(method, pathOf(pattern, 'db1'), scoped, {});
      expect(out.status, `${method} ${pattern} db1`).toBe(403);
      expect(JSON.parse(out.body).error.message).toMatch(/vm db1 is not in its vms scope/);
      const inside = await call(method, pathOf(pattern, 'web1'), scoped, {});
      expect([401, 403], `${method} ${pattern} web1`).not.toContain(inside.status);
    }
  });

  it("judges a VM by its host and networks in the applied spec, and a host route by the host's name", async () => {
    const h1 = await token('host1-oper', 'operator', { hosts: ['host1'] });
    const n2 = await token('net2-oper', 'operator', { networks: ['net?'] });
    const start = (vm: string, auth: string) => call('POST', `/v1/vms/${vm}/start`, auth, {});
    expect((await start('web1', h1)).status).not.toBe(403);
    expect((await start('db1', h1)).body).toMatch(/its host host2 is not in the token's hosts scope/);
    expect((await start('ghost', h1)).body).toMatch(/VM ghost is not in the applied spec/);
    expect((await start('db1', n2)).status).not.toBe(403);
    const h1admin = await token('host1-admin', 'admin', { hosts: ['host1'] });
    const rotate = (h: string) => call('POST', `/v1/hosts/${h}/rotate-cert`, h1admin, {});
    expect((await rotate('host1')).status).not.toBe(403);
    expect((await rotate('host2')).status).toBe(403);
  });

  it('lets an operator cancel a verify task only: other tasks need an admin', async () => {
    const oper = await token('canceller', 'operator');
    const admin = bearer(BOOTSTRAP);
    const taskOf = async (path: string, auth: string, body?: unknown) => {
      const r = await call('POST', path, auth, body);
      expect(r.status, r.body).toBe(202);
      return `/v1/tasks/${(JSON.parse(r.body) as { taskId: string }).taskId}`;
    };
    const verify = await taskOf('/v1/verify', oper);
    expect((await call('DELETE', verify, oper)).status).toBe(200);
    const apply = await taskOf('/v1/apply', admin, { spec: SPEC, source: 'spec.yaml' });
    const refused = await call('DELETE', apply, oper);
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.body).error.message).toMatch(/needs the admin role/);
    expect((await call('DELETE', apply, admin)).status).toBe(200);
    // An unknown task: nothing to judge by, so the route's own role applies, and the answer is 404.
    expect((await call('DELETE', pathOf('/v1/tasks/:id'), oper)).status).toBe(404);
  });

  it('treats the root-only unix socket as admin', async () => {
    const r = await call('GET', '/v1/tokens', undefined, undefined, localSocket);
    expect(r.status).toBe(200);
  });
});

describe('the audit trail and secrets', () => {
  it('has an entry for every mutating route, refusals included, naming who called', async () => {
    const reader = await token('audited-reader', 'read-only');
    const before = (await store.auditEntries(undefined, 100_000)).length;
    const mutating = routes().filter((r) => r.method !== 'GET');
    for (const { method, pattern } of mutating) {
      await call(method, pathOf(pattern), undefined, {});
      await call(method, pathOf(pattern), reader, {});
    }
    const r = await call('GET', '/v1/audit?limit=10000', bearer(BOOTSTRAP));
    expect(r.status).toBe(200);
    const entries = (JSON.parse(r.body) as Array<Record<string, unknown>>).slice(before);
    for (const { method, pattern, rule } of mutating) {
      const mine = entries.filter((e) => e.method === method && e.route === pattern);
      if (rule.role === 'open') {
        expect(mine.length, `${method} ${pattern}`).toBeGreaterThanOrEqual(2);
        continue;
      }
      expect(
        mine.find((e) => e.who === 'anonymous'),
        `${method} ${pattern}`,
      ).toMatchObject({
        status: 401,
        errorKind: 'unauthorized',
        remote: expect.any(String),
      });
      const byReader = mine.find((e) => e.who === 'audited-reader');
      // Read-only may make a login link and log out (its own session): audited as allowed.
      if (rule.role === 'read-only') {
        expect(byReader, `${method} ${pattern}`).toMatchObject({ role: 'read-only', status: 200 });
        continue;
      }
      expect(byReader, `${method} ${pattern}`).toMatchObject({ role: 'read-only', status: 403 });
      expect(byReader?.errorKind).toBe('forbidden');
    }
    expect(entries.every((e) => typeof e.durationMs === 'number' && typeof e.time === 'string')).toBe(true);
    const created = (await tokens.list()).find((t) => t.name === 'audited-reader')!;
    const all = await store.auditEntries(undefined, 100_000);
    expect(all.map((e) => e.record)).toContainEqual(
      expect.objectContaining({ route: '/v1/tokens', object: created.name, status: 200 }),
    );
    // GETs are not audited.
    expect(entries.some((e) => e.method === 'GET')).toBe(false);
  });

  it("records a task's outcome when it ends, beside the call that started it", async () => {
    // A task that ends at once, on an app of its own: the real ones wait on hosts this test does not run.
    const app = Fastify();
    let finish: (end: TaskEnd) => void = () => {};
    installAccessControl(app, {
      listener: 'unix-socket',
      tokens,
      audit: new AuditLog(store),
      context: { spec: async () => undefined, taskKind: () => 'verify' },
      taskEnded: (id) => {
        expect(id).toBe('task-1');
        return new Promise((f) => {
          finish = f;
        });
      },
    });
    app.post('/v1/verify', async (_req, reply) => reply.status(202).send({ taskId: 'task-1' }));
    await app.ready();
    expect((await app.inject({ method: 'POST', url: '/v1/verify', payload: {} })).statusCode).toBe(202);
    const ofTask = async () =>
      (await store.auditEntries(undefined, 100_000))
        .map((e) => e.record as Record<string, unknown>)
        .filter((e) => e.task === 'task-1');
    expect(await ofTask()).toEqual([expect.objectContaining({ status: 202, who: 'local-socket' })]);
    expect((await ofTask())[0]?.outcome).toBeUndefined();
    finish({ state: 'failed', errorKind: 'unavailable', durationMs: 1234 });
    for (let i = 0; i < 100 && (await ofTask()).length < 2; i++) await new Promise((f) => setTimeout(f, 10));
    expect((await ofTask())[1]).toMatchObject({
      route: '/v1/verify',
      who: 'local-socket',
      outcome: 'failed',
      errorKind: 'unavailable',
      status: 503,
      durationMs: 1234,
    });
    await app.close();
  });

  it('records the local socket as who, and filters by time', async () => {
    await call('POST', '/v1/vms/web1/start', undefined, {}, localSocket);
    // Not just the newest entry: a task of an earlier test may record its outcome after this call.
    const r = JSON.parse(
      (await call('GET', '/v1/audit?limit=20', undefined, undefined, localSocket)).body,
    ) as Array<{
      route: string;
      outcome?: string;
    }>;
    const start = r.filter((e) => e.route === '/v1/vms/:name/start' && e.outcome === undefined).at(-1);
    expect(start).toMatchObject({
      who: 'local-socket',
      remote: 'unix-socket',
      object: 'web1',
      role: 'admin',
    });
    const future = new Date(Date.now() + 3_600_000).toISOString();
    const none = await call('GET', `/v1/audit?since=${encodeURIComponent(future)}`, bearer(BOOTSTRAP));
    expect(JSON.parse(none.body)).toEqual([]);
  });

  it('keeps no token secret in the store, the audit trail or any answer but its creation', async () => {
    const list = await call('GET', '/v1/tokens', bearer(BOOTSTRAP));
    const audit = await call('GET', '/v1/audit?limit=10000', bearer(BOOTSTRAP));
    const kv = await store.list<unknown>('');
    const rows = await store.auditEntries(undefined, 100_000);
    const everything = [list.body, audit.body, JSON.stringify(kv), JSON.stringify(rows)].join('\n');
    expect(secrets.length).toBeGreaterThan(10);
    for (const s of secrets) expect(everything).not.toContain(s);
    expect(list.body).not.toMatch(/hash/);
    const listed = JSON.parse(list.body) as Array<{ name: string; lastUsedAt?: string; createdBy: string }>;
    expect(listed.find((t) => t.name === 'reader')).toMatchObject({
      createdBy: 'bootstrap-token',
      lastUsedAt: expect.any(String),
    });
  });

  it('refuses a second token of the same name', async () => {
    await token('twice', 'read-only');
    const r = await call('POST', '/v1/tokens', bearer(BOOTSTRAP), { name: 'twice', role: 'admin' });
    expect(r.status).toBe(409);
  });
});
