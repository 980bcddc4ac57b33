// The source's relay of a migration stream over real mutual TLS: its window against a target that acks only when told
// (no more than the window past the last ack; a lying ack refused), and through the real migration routes every byte
// arriving in order into a slow "QEMU", and a refusal before the acked answer begins.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Pki } from '../../controller/pki/pki.js';
import type { HypervisorMigrations } from '../../drivers/hypervisor/types.js';
import { createHttpApp } from '../../shared/http/server.js';
import type { TlsCredentials } from '../../shared/tls.js';
import { requireAgentClient } from '../server.js';
import { STREAM_ACK_TYPE, STREAM_ACKS_HEADER } from '../wire-migrate.js';
import { sendStream } from './relay.js';
import { registerMigrationRoutes } from './routes.js';
import { MigrationService } from './service.js';

const vm = {
  name: 'web',
  cpus: 1,
  memoryMiB: 16,
  image: { kind: 'test-guest' as const },
  disks: [],
  nics: [],
  state: 'running' as const,
};

const dir = mkdtempSync(join(tmpdir(), 'vmlink-gap-relay-'));
let app: FastifyInstance;
let svc: MigrationService;
let agent = '';
const creds: Record<string, TlsCredentials> = {};
/** The incoming "QEMU": collects what it reads; reads only while `reading`. */
const target = {
  got: [] as Buffer[],
  sock: undefined as Socket | undefined,
  server: undefined as Server | undefined,
};

beforeAll(async () => {
  const pki = await Pki.open(join(dir, 'pki'));
  for (const h of ['host1', 'host2']) creds[h] = await pki.issueLabHost(h);
  const path = join(dir, 'in.sock');
  target.server = createServer((s) => {
    target.sock = s;
    s.pause();
    s.on('data', (d: Buffer) => target.got.push(d));
  });
  await new Promise<void>((r) => target.server!.listen(path, r));
  const halves: Partial<HypervisorMigrations> = {
    migrateIn: () =>
      new Promise<{ stream: Socket }>((resolve) => {
        const s: Socket = connect(path, () => resolve({ stream: s }));
      }),
  };
  svc = new MigrationService({
    host: 'host2',
    migrations: () => halves as HypervisorMigrations,
    prepareIncoming: async () => {},
    assertMayRun: async () => {},
    deleteVm: async () => {},
    tls: () => creds.host2,
  });
  app = createHttpApp({ ...creds.host2!, requestCert: true });
  requireAgentClient(app, 'host2');
  await registerMigrationRoutes(app, svc);
  await app.listen({ host: '127.0.0.1', port: 0 });
  agent = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});

afterAll(async () => {
  await app?.close();
  target.server?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The source "QEMU": a unix socket pair; the relay reads `relayEnd`. */
async function sourceQemu(): Promise<{ qemu: Socket; relayEnd: Socket }> {
  const path = join(dir, `out-${Math.random()}.sock`);
  const server = createServer();
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const qemu = connect(path);
  const relayEnd = await accepted;
  server.close();
  return { qemu, relayEnd };
}

const req = (id: string) => ({
  id,
  vm: 'web',
  to: { host: 'host2', agent },
  downtimeLimitMs: 300,
});

/** A target agent that reads the stream at once but acks only when told (`ack()`), with real mutual TLS. */
async function slowAckTarget(): Promise<{
  address: string;
  received: () => number;
  ack: (n?: number) => void;
  close: () => Promise<void>;
}> {
  let received = 0;
  let res: import('node:http').ServerResponse | undefined;
  const server = createHttpsServer(
    { key: creds.host2!.key, cert: creds.host2!.cert, ca: creds.host2!.ca, requestCert: true },
    (req, r) => {
      res = r;
      r.writeHead(200, { 'content-type': STREAM_ACK_TYPE, [STREAM_ACKS_HEADER]: '1' });
      r.flushHeaders();
      req.on('data', (c: Buffer) => {
        received += c.length;
      });
      req.on('end', () => r.end(`${JSON.stringify({ receivedBytes: received })}\n`));
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `https://127.0.0.1:${(server.address() as { port: number }).port}`,
    received: () => received,
    ack: (n = received) => res?.write(`${JSON.stringify({ ack: n })}\n`),
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

const until = async (ok: () => boolean, ms = 5000) => {
  for (const end = Date.now() + ms; !ok() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
};

describe('the relay of a migration stream', () => {
  it('sends no more than its window past the last ack, and goes on as acks come', async () => {
    const t = await slowAckTarget();
    try {
      const s = await sourceQemu();
      const data = randomBytes(4 * 1024 * 1024);
      const done = sendStream(
        s.relayEnd,
        { ...req('0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c300'), to: { host: 'host2', agent: t.address } },
        creds.host1!,
        {
          windowBytes: 64 * 1024,
        },
      );
      s.qemu.end(data);
      // Nothing acked: the relay stops after its window (plus the chunk read past it, up to 64 KiB).
      await until(() => t.received() >= 64 * 1024);
      await new Promise((r) => setTimeout(r, 500));
      expect(t.received()).toBeGreaterThanOrEqual(64 * 1024);
      expect(t.received()).toBeLessThanOrEqual(64 * 1024 + 64 * 1024);
      // Each ack opens the window again, until all of it crossed.
      for (let i = 0; i < 400 && t.received() < data.length; i++) {
        t.ack();
        await new Promise((r) => setTimeout(r, 5));
      }
      await done;
      expect(t.received()).toBe(data.length);
    } finally {
      await t.close();
    }
  });

  it('refuses an ack of bytes never sent (it would open the window without bound)', async () => {
    const t = await slowAckTarget();
    try {
      const s = await sourceQemu();
      const done = sendStream(
        s.relayEnd,
        { ...req('0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c303'), to: { host: 'host2', agent: t.address } },
        creds.host1!,
        {
          windowBytes: 64 * 1024,
        },
      );
      s.qemu.write(randomBytes(1024));
      await until(() => t.received() > 0);
      t.ack(1 << 30);
      await expect(done).rejects.toThrow(/acknowledged bytes never sent/);
      s.qemu.destroy();
    } finally {
      await t.close();
    }
  });

  it('carries every byte in order through the real routes into a slow target QEMU, acked', async () => {
    const id = '0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c301';
    await svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
    const s = await sourceQemu();
    const data = randomBytes(8 * 1024 * 1024);
    const stamps: string[] = [];
    const done = sendStream(s.relayEnd, req(id), creds.host1!, {
      windowBytes: 64 * 1024,
      stamp: (what) => stamps.push(what),
    });
    s.qemu.end(data);
    // The target's QEMU reads only after a while: the stream waits, then goes on.
    await new Promise((r) => setTimeout(r, 300));
    target.sock!.resume();
    await done;
    await new Promise((r) => setTimeout(r, 50));
    expect(Buffer.concat(target.got).equals(data)).toBe(true);
    expect(stamps).toEqual(['source-relay-start', 'source-relay-flushed', 'source-relay-answered']);
    target.got = [];
  });

  it('refuses before the answer begins: a stream of an unknown migration gets its HTTP error', async () => {
    const id = '0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c302';
    await expect(
      (async () => {
        const s = await sourceQemu();
        const p = sendStream(s.relayEnd, req(id), creds.host1!, { windowBytes: 64 * 1024 });
        s.qemu.end('x');
        await p;
      })(),
    ).rejects.toThrow(/refused the migration stream \(HTTP 404\)/);
  });
});
