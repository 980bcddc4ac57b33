import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { BadResponseError, UnauthorizedError, type VmlinkError } from '../errors.js';
import { HttpClient } from './client.js';

const Report = z.object({ host: z.string(), vms: z.array(z.object({ name: z.string(), pid: z.number() })) });

// A real HTTP server on a unix socket whose answer per path is fixed below (a peer that may misbehave).
const answers: Record<string, (res: import('node:http').ServerResponse) => void> = {
  '/good': (res) =>
    res.end(JSON.stringify({ host: 'h1', vms: [{ name: 'web1', pid: 42 }], extra: 'dropped' })),
  '/wrong-field': (res) => res.end(JSON.stringify({ host: 'h1', vms: [{ name: 'web1', pid: 'x' }] })),
  '/not-json': (res) => res.end('<html>hello</html>'),
  '/big-declared': (res) => {
    res.setHeader('content-length', String(2048));
    res.end('x'.repeat(2048));
  },
  '/big-streamed': (res) => {
    // No content-length: the client must stop by counting what arrives.
    res.write('['.repeat(1));
    for (let i = 0; i < 64; i++) res.write(`${'"x",'.repeat(64)}`);
    res.end('"x"]');
  },
  '/unauthorized': (res) => {
    res.statusCode = 401;
    res.end(JSON.stringify({ error: { kind: 'unauthorized', message: 'missing or wrong bearer token' } }));
  },
  '/unauthorized-bare': (res) => {
    res.statusCode = 401;
    res.end('');
  },
  '/conflict': (res) => {
    res.statusCode = 409;
    res.end(JSON.stringify({ error: { kind: 'conflict', message: 'busy', subject: 'vm/web1' } }));
  },
};

describe('HttpClient against a real server on a unix socket', () => {
  let dir: string;
  let server: Server;
  let client: HttpClient;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-http-'));
    const path = join(dir, 'peer.sock');
    server = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      const answer = answers[req.url ?? ''];
      if (answer) answer(res);
      else {
        res.statusCode = 404;
        res.end('{}');
      }
    });
    await new Promise<void>((r) => server.listen(path, r));
    client = new HttpClient(`unix://${path}`, { name: 'agent of h1', maxResponseBytes: 1024 });
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('parses a conforming answer with its schema (unknown fields dropped)', async () => {
    expect(await client.get('/good', Report)).toEqual({ host: 'h1', vms: [{ name: 'web1', pid: 42 }] });
  });

  it('refuses an answer that breaks the schema, naming the route and the field', async () => {
    const e = await client.get('/wrong-field', Report).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BadResponseError);
    expect((e as VmlinkError).kind).toBe('bad-response');
    expect((e as Error).message).toMatch(/agent of h1 answered GET \/wrong-field .*vms\[0\]\.pid/);
    expect((e as VmlinkError).subject).toBe('GET /wrong-field vms[0].pid');
  });

  it('refuses a body that is not JSON', async () => {
    await expect(client.get('/not-json', Report)).rejects.toThrow(
      /GET \/not-json \(200\) with a non-JSON body/,
    );
  });

  it('refuses an answer larger than its bound, declared or streamed', async () => {
    await expect(client.get('/big-declared', z.unknown())).rejects.toThrow(
      /answered GET \/big-declared with more than 1024 bytes/,
    );
    const e = await client.get('/big-streamed', z.unknown()).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BadResponseError);
    expect((e as Error).message).toMatch(/GET \/big-streamed with more than 1024 bytes/);
  });

  it('rebuilds typed errors, 401 as unauthorized even without a body', async () => {
    await expect(client.get('/unauthorized', Report)).rejects.toMatchObject({ kind: 'unauthorized' });
    await expect(client.get('/unauthorized-bare', Report)).rejects.toBeInstanceOf(UnauthorizedError);
    await expect(client.post('/conflict', {}, Report)).rejects.toMatchObject({
      kind: 'conflict',
      message: 'busy',
      subject: 'vm/web1',
    });
  });
});

it('gives up on a TLS peer that accepts but never completes the handshake within the time asked, not twice that', async () => {
  // A lab relay whose far side is cut: the unix socket connects, the handshake never ends.
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-http-hang-'));
  const sock = join(dir, 'hang.sock');
  const held: Socket[] = [];
  const hang = createNetServer((s) => held.push(s));
  await new Promise<void>((r) => hang.listen(sock, r));
  try {
    const c = new HttpClient(`https+unix://${sock}`, { name: 'agent of h1', tls: { ca: 'unused' } });
    const started = Date.now();
    const e = await c.get('/v1/health', z.unknown(), 1_000).catch((x: unknown) => x);
    expect((e as VmlinkError).kind).toBe('timeout');
    // Node's idle timer starts only after the socket connects, which doubled the wait (2 s for 1 s asked).
    expect(Date.now() - started).toBeLessThan(1_900);
  } finally {
    for (const s of held) s.destroy();
    await new Promise((r) => hang.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
});
