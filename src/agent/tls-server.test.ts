// The agent's TLS listener and the controller's client of it, over real TLS on unix sockets: each side refuses a
// certificate of another CA, of the wrong role or name, or revoked; rotation swaps the agent's certificate while
// it keeps serving.
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient, setAgentTrust } from '../controller/agents.js';
import { Pki } from '../controller/pki/pki.js';
import { HostCredentials } from '../controller/pki/service.js';
import { RecordingRunner } from '../exec/runner.js';
import { LeaseStatusSchema } from '../shared/cluster.js';
import { HttpClient } from '../shared/http/client.js';
import { listen } from '../shared/http/server.js';
import { CONTROLLER_NAME, normalSerial, readCredentials, type TlsCredentials } from '../shared/tls.js';
import { Agent } from './agent.js';
import { createAgentServer } from './server.js';
import { CertRotation } from './tls.js';
import { AgentHealthSchema } from './wire.js';

const dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-tls-'));
let creds: HostCredentials;
let foreign: Pki;
let app: FastifyInstance;
let hostCreds: TlsCredentials;
const socket = join(dir, 'host1.sock');
const address = `https+unix://${socket}`;

beforeAll(async () => {
  creds = await HostCredentials.open(join(dir, 'pki'));
  foreign = await Pki.open(join(dir, 'foreign'));
  await creds.ensureLabHost('host1', join(dir, 'host1-tls'));
  hostCreds = readCredentials(join(dir, 'host1-tls'))!;
  const agent = new Agent({
    host: 'host1',
    runner: new RecordingRunner(),
    networks: {},
    hypervisor: {} as ConstructorParameters<typeof Agent>[0]['hypervisor'],
    stateDir: dir,
  });
  const rotation = new CertRotation('host1', join(dir, 'host1-tls'), hostCreds, (next) =>
    (app.server as unknown as import('node:tls').Server).setSecureContext(next),
  );
  app = await createAgentServer(agent, { tls: hostCreds, rotation, prerequisites: async () => [] });
  await listen(app, `unix://${socket}`);
});

afterAll(async () => {
  setAgentTrust(undefined);
  await app.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A client of the agent that presents `client` and trusts `ca`, checking nothing of the server beyond the chain. */
const rawClient = (ca: string, client?: { key: string; cert: string }) =>
  new HttpClient(address, { tls: { ca, ...(client ? { key: client.key, cert: client.cert } : {}) } });

describe("the agent's TLS listener", () => {
  it("answers the controller's certificate", async () => {
    expect((await new AgentClient('host1', address).health()).ok).toBe(true);
  });

  it('refuses a client without a certificate, with one of another CA, or with a host certificate', async () => {
    await expect(rawClient(creds.pki.caPem).get('/v1/health', AgentHealthSchema)).rejects.toMatchObject({
      kind: 'unauthorized',
      message: expect.stringMatching(/agent of host1 refused the client: it presented no client certificate/),
    });
    const other = await foreign.controllerCredentials();
    await expect(
      rawClient(creds.pki.caPem, other).get('/v1/health', AgentHealthSchema),
    ).rejects.toMatchObject({
      kind: 'unauthorized',
      message: expect.stringMatching(/refused the client: its certificate was not issued by this CA/),
    });
    const { serial: _s, ...peer } = await creds.pki.issueLabHost('host2');
    await expect(rawClient(creds.pki.caPem, peer).get('/v1/health', AgentHealthSchema)).rejects.toMatchObject(
      {
        kind: 'unauthorized',
        message: expect.stringMatching(new RegExp(`names host "host2", not controller "${CONTROLLER_NAME}"`)),
      },
    );
  });
});

describe("a peer host's certificate", () => {
  it('reads GET /v1/cluster/lease and nothing else; one of another CA reads nothing', async () => {
    const { serial: _s, ...peer } = await creds.pki.issueLabHost('host2');
    expect(await rawClient(creds.pki.caPem, peer).get('/v1/cluster/lease', LeaseStatusSchema)).toEqual({
      host: 'host1',
      mode: 'off',
      etcd: 'unreachable',
      fencedVms: [],
    });
    for (const path of ['/v1/report', '/v1/health', '/v1/cluster/lease/x'])
      await expect(rawClient(creds.pki.caPem, peer).get(path, AgentHealthSchema)).rejects.toMatchObject({
        kind: 'unauthorized',
        message: expect.stringMatching(/names host "host2", not controller/),
      });
    await expect(
      rawClient(creds.pki.caPem, peer).post('/v1/cluster/lease', {}, AgentHealthSchema),
    ).rejects.toMatchObject({ kind: 'unauthorized' });
    const { serial: _f, ...alien } = await foreign.issueLabHost('host2');
    await expect(
      rawClient(creds.pki.caPem, alien).get('/v1/cluster/lease', LeaseStatusSchema),
    ).rejects.toMatchObject({
      kind: 'unauthorized',
      message: expect.stringMatching(/not issued by this CA/),
    });
  });
});

describe("the controller's client of an agent", () => {
  it('refuses an agent whose certificate names another host', async () => {
    await expect(new AgentClient('host9', address).health()).rejects.toMatchObject({
      kind: 'unauthorized',
      message: expect.stringMatching(/agent of host9 .*names host "host1", not host "host9"/),
    });
  });

  it('rotates the certificate while the agent keeps serving, and then refuses the old one as revoked', async () => {
    const agent = new AgentClient('host1', address);
    const before = normalSerial(new X509Certificate(hostCreds.cert).serialNumber);
    const r = await creds.rotate('host1', agent);
    expect(r.previousSerial).toBe(before);
    expect(r.serial).not.toBe(before);
    expect((await agent.health()).ok).toBe(true);
    // On disk too, so a restart serves the new one.
    const disk = readCredentials(join(dir, 'host1-tls'))!;
    expect(normalSerial(new X509Certificate(disk.cert).serialNumber)).toBe(r.serial);
    expect(creds.pki.refusal('host1', before)).toMatch(/revoked .*rotated/);
    // An agent still serving the old certificate would be refused: present it from a second server.
    const old = await createAgentServer(
      new Agent({
        host: 'host1',
        runner: new RecordingRunner(),
        networks: {},
        hypervisor: {} as ConstructorParameters<typeof Agent>[0]['hypervisor'],
        stateDir: dir,
      }),
      { tls: hostCreds, prerequisites: async () => [] },
    );
    const oldSocket = join(dir, 'old.sock');
    await listen(old, `unix://${oldSocket}`);
    try {
      await expect(new AgentClient('host1', `https+unix://${oldSocket}`).health()).rejects.toMatchObject({
        kind: 'unauthorized',
        message: expect.stringMatching(new RegExp(`serial ${before}\\) was revoked .*rotated`)),
      });
    } finally {
      await old.close();
    }
  });

  it('refuses an agent once its host is revoked (it left the spec)', async () => {
    expect(creds.revoke('host1', 'left the spec')).toBe(true);
    await expect(new AgentClient('host1', address).health()).rejects.toMatchObject({
      kind: 'unauthorized',
      message: expect.stringMatching(/was revoked .*left the spec/),
    });
  });
});
