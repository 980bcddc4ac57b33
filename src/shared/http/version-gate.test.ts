import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { formatVersionHeader, localVersion, PROTOCOLS } from '../version.js';
import { HttpClient } from './client.js';
import { createHttpApp, listen } from './server.js';
import { addVersionGate } from './version-gate.js';

const dir = mkdtempSync(join(tmpdir(), 'vmlink-gate-'));
const gated = createHttpApp();
const future = createHttpApp();
const newer = PROTOCOLS.wire.version + 1;
const Health = z.object({ ok: z.boolean() });

/** A raw GET with `headers`: status, the server's wire header and the body. */
function rawGet(socketPath: string, headers: Record<string, string>) {
  return new Promise<{ status: number; wire: unknown; body: string }>((resolve, reject) => {
    const req = request({ socketPath, path: '/v1/health', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, wire: res.headers['x-vmlink-wire'], body }));
    });
    req.on('error', reject).end();
  });
}

beforeAll(async () => {
  addVersionGate(gated, 'wire', 'agent of host1');
  gated.get('/v1/health', async () => ({ ok: true }));
  // An agent from the future that no longer speaks this build's wire version.
  future.addHook('onRequest', async (_req, reply) => {
    void reply.header('x-vmlink-wire', `${newer + 1};min=${newer};software=9.9.9`);
  });
  future.get('/v1/health', async () => ({ ok: true }));
  await listen(gated, `unix://${join(dir, 'gated.sock')}`);
  await listen(future, `unix://${join(dir, 'future.sock')}`);
});
afterAll(async () => {
  await gated.close();
  await future.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the version handshake over HTTP', () => {
  it('answers a client of this build, and every answer carries the server version', async () => {
    const c = new HttpClient(`unix://${join(dir, 'gated.sock')}`, {
      protocol: 'wire',
      name: 'agent of host1',
    });
    expect(await c.get('/v1/health', Health)).toEqual({ ok: true });
    const r = await rawGet(join(dir, 'gated.sock'), {});
    expect(r).toMatchObject({ status: 200, wire: formatVersionHeader(localVersion('wire')) });
  });

  it('refuses a client it cannot speak with, before the request runs, naming both versions', async () => {
    const r = await rawGet(join(dir, 'gated.sock'), {
      'x-vmlink-wire': `${newer};min=${newer};software=9.0.0`,
    });
    expect(r.status).toBe(422);
    expect(JSON.parse(r.body).error).toMatchObject({ kind: 'unsupported' });
    expect(JSON.parse(r.body).error.message).toMatch(
      /the controller runs vmlink 9\.0\.0 .* upgrade the agent of host1/,
    );
  });

  it('makes the client refuse an answer from a server it cannot speak with', async () => {
    const c = new HttpClient(`unix://${join(dir, 'future.sock')}`, {
      protocol: 'wire',
      name: 'agent of host2',
    });
    await expect(c.get('/v1/health', Health)).rejects.toThrow(
      /the agent of host2 runs vmlink 9\.9\.9 .*; upgrade the controller to a vmlink that speaks agent wire/,
    );
    // A client that does not take part in the handshake does not check.
    expect(await new HttpClient(`unix://${join(dir, 'future.sock')}`).get('/v1/health', Health)).toEqual({
      ok: true,
    });
  });
});
