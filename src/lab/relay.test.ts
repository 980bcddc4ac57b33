import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { Pki } from '../controller/pki/pki.js';
import { CONTROLLER_NAME } from '../shared/tls.js';
import { pairRoutes, startRelay } from './relay.js';

const dir = mkdtempSync(join(tmpdir(), 'vmlink-relay-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A TCP server that reads until the client half-closes, then answers with what it got, reversed, and ends. */
async function reverser(): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => s.end(Buffer.concat(chunks).toString().split('').reverse().join('')));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Connects to a unix socket, sends `text`, half-closes, and resolves with everything read until close. */
function exchange(path: string, text: string): Promise<{ data: string; error?: string }> {
  return new Promise((resolve) => {
    const c = connect({ path, allowHalfOpen: true });
    let data = '';
    let error: string | undefined;
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      data += d;
    });
    c.on('error', (e) => {
      error = e.message;
    });
    c.on('close', () => resolve({ data, ...(error ? { error } : {}) }));
    c.end(text);
  });
}

describe('lab relay', () => {
  it('pipes a unix socket to a TCP target both ways and passes the half-close on', async () => {
    const { server, port } = await reverser();
    const path = join(dir, 'h1.sock');
    const relay = await startRelay([{ listen: `unix://${path}`, to: `http://127.0.0.1:${port}` }]);
    try {
      expect(statSync(path).mode & 0o777).toBe(0o600);
      const big = 'x'.repeat(300_000);
      const [a, b] = await Promise.all([exchange(path, 'hello'), exchange(path, `${big}y`)]);
      expect(a.data).toBe('olleh');
      expect(b.data).toBe(`y${big}`);
    } finally {
      await relay.close();
      server.close();
    }
    expect(() => statSync(path)).toThrow();
  });

  it('serves several hosts from one process, and cuts the client when the target refuses', async () => {
    const { server, port } = await reverser();
    const dead = await reverser();
    dead.server.close();
    const ok = join(dir, 'ok.sock');
    const refused = join(dir, 'refused.sock');
    const relay = await startRelay(
      pairRoutes(
        [`unix://${ok}`, `unix://${refused}`],
        [`http://127.0.0.1:${port}`, `http://127.0.0.1:${dead.port}`],
      ),
    );
    try {
      expect((await exchange(ok, 'abc')).data).toBe('cba');
      const r = await exchange(refused, 'abc');
      expect(r.data).toBe('');
    } finally {
      await relay.close();
      server.close();
    }
  });

  it('passes TLS through untouched: the client sees the server certificate and completes the handshake', async () => {
    const pki = await Pki.open(join(dir, 'pki'));
    const server = createTlsServer({ ...(await pki.controllerCredentials()), minVersion: 'TLSv1.3' }, (s) =>
      s.end('over tls'),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const path = join(dir, 'tls.sock');
    const relay = await startRelay([{ listen: `unix://${path}`, to: `https://127.0.0.1:${port}` }]);
    try {
      const { data, subject } = await new Promise<{ data: string; subject: string }>((resolve, reject) => {
        const c = tlsConnect({
          path,
          ca: pki.caPem,
          servername: 'vmlink',
          checkServerIdentity: () => undefined,
        });
        let data = '';
        c.setEncoding('utf8');
        c.on('data', (d: string) => {
          data += d;
        });
        c.on('error', reject);
        c.on('end', () => resolve({ data, subject: c.getPeerCertificate().subject.CN as string }));
      });
      expect(data).toBe('over tls');
      expect(subject).toBe(CONTROLLER_NAME);
    } finally {
      await relay.close();
      server.close();
    }
  });

  it('refuses unpaired or malformed routes', () => {
    expect(() => pairRoutes(['unix:///a.sock'], [])).toThrow(/one --to per --listen/);
    expect(() => pairRoutes(['/a.sock'], ['http://1.2.3.4:7443'])).toThrow(/unix:\/\/\/path/);
    expect(() => pairRoutes(['unix:///a.sock'], ['1.2.3.4:7443'])).toThrow(/https:\/\/addr:port/);
  });
});
