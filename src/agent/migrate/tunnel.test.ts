// The disk tunnel of a block migration over real mutual TLS (host certificates of a real CA, the agent's real
// client check and migration routes): bytes cross both ways into the "QEMU" NBD socket, and each refusal holds.
import { mkdtempSync, rmSync } from 'node:fs';
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
import { registerMigrationRoutes } from './routes.js';
import { MigrationService } from './service.js';
import { tunnelTo } from './tunnel.js';

const id = '0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c222';
const vm = {
  name: 'web',
  cpus: 1,
  memoryMiB: 16,
  image: { kind: 'test-guest' as const },
  disks: [{ name: 'data', sizeMiB: 32 }],
  nics: [],
  state: 'running' as const,
};

const dir = mkdtempSync(join(tmpdir(), 'vmlink-mgb-tunnel-'));
let app: FastifyInstance;
let plain: FastifyInstance;
let nbd: Server;
let svc: MigrationService;
let agent = '';
let plainAgent = '';
const creds: Record<string, TlsCredentials> = {};
const deleted: string[] = [];

beforeAll(async () => {
  const pki = await Pki.open(join(dir, 'pki'));
  for (const h of ['host1', 'host2', 'host3']) creds[h] = await pki.issueLabHost(h);
  const other = await Pki.open(join(dir, 'other-pki'));
  creds.stranger = { ...(await other.issueLabHost('host1')), ca: pki.caPem };
  // The incoming QEMU's NBD export: answers every chunk with its upper-case copy.
  nbd = createServer((s) => s.on('data', (d: Buffer) => s.write(d.toString().toUpperCase())));
  const path = join(dir, 'nbd.sock');
  await new Promise<void>((r) => nbd.listen(path, r));
  const halves: Partial<HypervisorMigrations> = {
    migrateIn: async () => {
      const stream: Socket = await new Promise((resolve) => {
        const s: Socket = connect(path, () => resolve(s));
      });
      return { stream, disks: { path, maxBytes: 4096, maxConnections: 2 } };
    },
  };
  svc = new MigrationService({
    host: 'host2',
    migrations: () => halves as HypervisorMigrations,
    prepareIncoming: async () => {},
    assertMayRun: async () => {},
    deleteVm: async (n) => {
      deleted.push(n);
    },
    tls: () => creds.host2,
  });
  app = createHttpApp({ ...creds.host2!, requestCert: true });
  requireAgentClient(app, 'host2');
  await registerMigrationRoutes(app, svc);
  await app.listen({ host: '127.0.0.1', port: 0 });
  agent = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  plain = createHttpApp();
  await registerMigrationRoutes(plain, svc);
  await plain.listen({ host: '127.0.0.1', port: 0 });
  plainAgent = `https://127.0.0.1:${(plain.server.address() as { port: number }).port}`;
  await svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
});

afterAll(async () => {
  await svc.abortIncoming(id, 'test over').catch(() => {});
  await app?.close();
  await plain?.close();
  nbd?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A "QEMU" NBD connection on the source side, carried by `tunnelTo`; resolves with what came back. */
async function through(o: {
  from: string;
  toHost?: string;
  address?: string;
  send?: string;
}): Promise<{ got: string; done: Promise<void> }> {
  const server = createServer();
  const path = join(dir, `out-${Math.random()}.sock`);
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const qemu = connect(path);
  const conn = await accepted;
  server.close();
  const done = tunnelTo(conn, {
    id,
    to: { host: o.toHost ?? 'host2', agent: o.address ?? agent },
    tls: creds[o.from]!,
  });
  let got = '';
  qemu.on('data', (d: Buffer) => {
    got += d.toString();
  });
  qemu.on('error', () => {});
  qemu.write(o.send ?? 'nbd magic');
  await Promise.race([done.catch(() => {}), new Promise((r) => setTimeout(r, 500))]);
  qemu.destroy();
  return { got, done };
}

describe('the disk tunnel of a block migration (mutual TLS)', () => {
  it('carries a connection both ways between the source host and the incoming QEMU', async () => {
    const r = await through({ from: 'host1' });
    expect(r.got).toBe('NBD MAGIC');
    await r.done;
  });

  it('refuses another host, a certificate of another CA, and the target checks come from its own certificate', async () => {
    await expect((await through({ from: 'host3' })).done).rejects.toThrow(
      /only the agent of host1 may open its disk tunnels, not host3's/,
    );
    await expect((await through({ from: 'stranger' })).done).rejects.toThrow(/refused the client/);
    // The source checks who answers: host2's certificate is not host9's.
    await expect((await through({ from: 'host1', toHost: 'host9' })).done).rejects.toThrow(
      /presented a certificate that is refused/,
    );
  });

  it('refuses a tunnel without TLS (no host certificate to judge)', async () => {
    // The plain server speaks no TLS: the handshake fails, and its route refuses a caller without a certificate.
    await expect((await through({ from: 'host1', address: plainAgent })).done).rejects.toThrow();
    expect(() => svc.assertTunnel(id, undefined)).toThrow(
      /only the agent of host1 may open its disk tunnels/,
    );
  });

  it('cuts a tunnel past the byte budget, and opens no more than the export takes', async () => {
    const big = 'x'.repeat(5000);
    const r = await through({ from: 'host1', send: big });
    expect(r.got.length).toBeLessThan(big.length);
    // Two opened above (the first and this one): the export takes two connections.
    expect(() => svc.assertTunnel(id, 'host1')).toThrow(/has opened its 2 disk tunnels already/);
  });
});
