import { describe, expect, it } from 'vitest';
import { createHttpApp } from '../shared/http/server.js';
import type { VerifyResult } from './verify.js';
import { addVerifyLastRoute, LastVerify } from './verify-last.js';

const RESULT: VerifyResult = {
  endpoints: [{ id: 'a', kind: 'vm', host: 'h1', network: 'lan' }],
  cells: [],
  pmtu: [],
  routers: [],
  ok: true,
  mismatches: 0,
  measuredAt: '2026-12-01T00:00:00.000Z',
  durationMs: 12,
} as unknown as VerifyResult;

describe('GET /v1/verify/last', () => {
  it('says no verify has run yet (404 not-found), then answers the last one', async () => {
    const app = createHttpApp();
    const last = new LastVerify();
    addVerifyLastRoute(app, last);
    await app.ready();
    const before = await app.inject({ method: 'GET', url: '/v1/verify/last' });
    expect(before.statusCode).toBe(404);
    expect(before.json()).toMatchObject({
      error: { kind: 'not-found', message: expect.stringMatching(/no verify/) },
    });
    last.set(RESULT);
    const after = await app.inject({ method: 'GET', url: '/v1/verify/last' });
    expect(after.statusCode).toBe(200);
    expect(after.json()).toMatchObject({ ok: true, measuredAt: RESULT.measuredAt, endpoints: [{ id: 'a' }] });
    await app.close();
  });
});
