// Management traffic is mutual TLS, through the real CLI and a two-host lab: a capture on the lab LAN shows no
// cleartext while heartbeats and an apply run; certificates of another CA and revoked ones are refused; join
// tokens are single use and expire; a rotated agent keeps serving.
import { type ChildProcess, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { joinController } from '../../src/agent/join.js';
import { AgentHealthSchema } from '../../src/agent/wire.js';
import { AgentClient } from '../../src/controller/agents.js';
import type { HostStatus } from '../../src/controller/controller.js';
import { LAST_SEEN_REFRESH_MS } from '../../src/controller/monitor.js';
import { Pki } from '../../src/controller/pki/pki.js';
import { switchNs } from '../../src/lab/names.js';
import { HttpClient } from '../../src/shared/http/client.js';
import { normalSerial, readCredentials } from '../../src/shared/tls.js';
import { trustAgentsAsController } from '../helpers/agent-trust.js';
import { cliJson, runCli } from '../helpers/cli.js';

const LAB = 'ittls';
const SPEC = `
version: 1
hosts: [{ name: host1 }, { name: host2 }]
lab:
  name: ${LAB}
  lan: { cidr: 192.168.73.0/24, gateway: 192.168.73.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.73 }
  hosts: [{ name: host1, address: 192.168.73.10 }, { name: host2, address: 192.168.73.11 }]
`;
const WITH_NET = SPEC.replace(
  'lab:',
  'networks: [{ name: iso1, host: host1, mode: isolated, cidr: 10.73.0.0/24 }]\nlab:',
);

const root = mkdtempSync('/tmp/vmlink-ittls-');
const PORT = 17_000 + Math.floor(Math.random() * 2_000);
const API = `https://127.0.0.1:${PORT}`;
const USER_TOKEN = 'u'.repeat(40);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'c.sock'),
};
const pkiDir = join(env.VMLINK_STATE_DIR, 'pki');
const file = join(root, 'spec.yaml');
const relaySocket = (host: string) => join(env.VMLINK_RUN_DIR, 'lab', LAB, `${host}.sock`);

type Status = { hosts: HostStatus[] };
const hostState = async (name: string) =>
  (await cliJson<Status>(['status'], env)).hosts.find((h) => h.name === name)!;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** The serial of the certificate a TLS server presents on a unix socket (no client certificate offered). */
function servedSerial(path: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = tlsConnect({ path, ca, servername: 'vmlink', checkServerIdentity: () => undefined });
    c.once('secureConnect', () => {
      resolve(normalSerial(c.getPeerCertificate().serialNumber));
      c.destroy();
    });
    c.once('error', reject);
  });
}

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(file, SPEC);
  const tokenFile = join(root, 'user.token');
  writeFileSync(tokenFile, `${USER_TOKEN}\n`, { mode: 0o600 });
  const d = await runCli(
    ['daemon', '--detach', '--heartbeat-ms', '1000', '--listen', API, '--token-file', tokenFile],
    // Debug logs, so that the check that no token reaches them looks at a log that has content.
    { ...env, VMLINK_LOG: 'debug' },
  );
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  expect(up.stdout).toContain('issued certificates to host1, host2');
  // This test process calls agents as the controller does: with the controller's certificate.
  untrust = await trustAgentsAsController(env.VMLINK_STATE_DIR);
}, 120_000);

let untrust: (() => void) | undefined;

afterAll(async () => {
  untrust?.();
  await runCli(['lab', 'down', '-f', file], env);
  await runCli(['daemon', '--stop'], env);
  rmSync(root, { recursive: true, force: true });
});

it('keeps the CA key 0600 in the state dir and no bearer token anywhere in the lab', () => {
  expect(statSync(join(pkiDir, 'ca.key')).mode & 0o777).toBe(0o600);
  expect(statSync(join(env.VMLINK_STATE_DIR, 'lab', LAB, 'host1', 'tls', 'key.pem')).mode & 0o777).toBe(
    0o600,
  );
  expect(existsSync(join(env.VMLINK_RUN_DIR, 'lab', LAB, 'agent.token'))).toBe(false);
  // The host's state dir stays traversable for its VMs' QEMU identities.
  expect(statSync(join(env.VMLINK_STATE_DIR, 'lab', LAB, 'host1')).mode & 0o011).toBe(0o011);
});

it('sends no cleartext on the lab LAN while heartbeats and an apply run', async () => {
  const pcap = join(root, 'lan.pcap');
  const dump: ChildProcess = spawn(
    'ip',
    ['netns', 'exec', switchNs(LAB), 'tcpdump', '-i', 'lan', '-U', '-n', '-w', pcap, 'tcp', 'port', '7443'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    dump.stderr!.on('data', (d: Buffer) => d.toString().includes('listening on') && resolve());
    dump.once('exit', (code) => reject(new Error(`tcpdump exited ${code}`)));
  });
  try {
    writeFileSync(file, WITH_NET);
    const a = await runCli(['apply', '-f', file], env);
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toContain('+ network iso1');
    // A few heartbeats (1 s apart) on top of the apply.
    await new Promise((r) => setTimeout(r, 3_500));
  } finally {
    dump.kill('SIGINT');
    await new Promise((r) => dump.once('exit', r));
  }
  const bytes = readFileSync(pcap);
  // The apply and the heartbeats did cross the LAN (tens of kilobytes of TLS records)...
  expect(bytes.length).toBeGreaterThan(10_000);
  expect(bytes.includes(Buffer.from([0x17, 0x03, 0x03]))).toBe(true); // TLS application data records
  // ...and none of it is readable: no HTTP, no bearer token, no JSON.
  const text = bytes.toString('latin1');
  for (const clear of ['Authorization', 'Bearer', 'HTTP/1.1', 'x-vmlink', '"ok"', '"kind"', 'iso1', 'v1/'])
    expect(text.includes(clear), `cleartext ${clear} on the LAN`).toBe(false);
});

it("refuses a certificate of another CA on both sides: the agent's and a client's", async () => {
  const foreign = await Pki.open(join(root, 'foreign-pki'));
  const other = await foreign.controllerCredentials();
  // A client with another CA's "controller" certificate, through the relay, is refused by the agent.
  const pki = await Pki.open(pkiDir);
  const client = new HttpClient(`https+unix://${relaySocket('host1')}`, {
    name: 'agent of host1',
    tls: { ca: pki.caPem, key: other.key, cert: other.cert },
  });
  await expect(client.get('/v1/health', AgentHealthSchema)).rejects.toMatchObject({
    kind: 'unauthorized',
    message: expect.stringMatching(
      /agent of host1 refused the client: its certificate was not issued by this CA/,
    ),
  });
  // A controller of another CA does not trust our agents.
  const stranger = new HttpClient(`https+unix://${relaySocket('host1')}`, {
    name: 'agent of host1',
    tls: { ca: foreign.caPem, key: other.key, cert: other.cert },
  });
  await expect(stranger.get('/v1/health', AgentHealthSchema)).rejects.toMatchObject({
    kind: 'unauthorized',
    message: expect.stringMatching(/refused TLS with agent of host1 .*not issued by this CA/),
  });
});

it('joins a host with a single-use token pinned to the CA; a second use and a late one are refused', async () => {
  const tokenFor = async (host: string, ttl: string) =>
    (await cliJson<{ token: string; caFingerprint: string }>(['host', 'join', host, '--ttl', ttl], env))
      .token;
  const token = await tokenFor('host3', '10m');
  const dir = join(root, 'host3-tls');
  const creds = await joinController({ host: 'host3', url: API, token, dir });
  const cert = new X509Certificate(creds.cert);
  expect(cert.subjectAltName).toBe('DNS:host3');
  expect(cert.checkIssued(new X509Certificate(creds.ca))).toBe(true);
  expect(readFileSync(join(dir, 'key.pem'), 'utf8')).toBe(creds.key);
  await expect(
    joinController({ host: 'host3', url: API, token, dir: join(root, 'again') }),
  ).rejects.toMatchObject({
    kind: 'unauthorized',
    message: expect.stringMatching(/join of host host3 refused: the token was already used/),
  });
  const late = await tokenFor('host4', '1s');
  await new Promise((r) => setTimeout(r, 1_500));
  await expect(
    joinController({ host: 'host4', url: API, token: late, dir: join(root, 'h4') }),
  ).rejects.toThrow(/join of host host4 refused: the token expired/);
  // A token whose pinned fingerprint is not this controller's CA: the agent refuses to join.
  const forged = token.replace(/^(vmlink-join-1\.)[0-9a-f]{64}/, `$1${'0'.repeat(64)}`);
  await expect(
    joinController({ host: 'host3', url: API, token: forged, dir: join(root, 'h5') }),
  ).rejects.toThrow(/offered a CA with fingerprint .* not the join token's/);
});

it('serves the TCP API only over TLS, to clients that trust the CA', async () => {
  const tcpEnv = { ...env, VMLINK_SOCKET: API, VMLINK_TOKEN: USER_TOKEN };
  const noCa = await runCli(['status'], tcpEnv);
  expect(noCa.code).not.toBe(0);
  expect(noCa.stderr).toMatch(/set VMLINK_CA/);
  const ok = await runCli(['status', '--json'], { ...tcpEnv, VMLINK_CA: join(pkiDir, 'ca.pem') });
  expect(ok.code, ok.stderr).toBe(0);
  const wrongToken = await runCli(['status'], {
    ...tcpEnv,
    VMLINK_CA: join(pkiDir, 'ca.pem'),
    VMLINK_TOKEN: 'x'.repeat(40),
  });
  expect(wrongToken.code).not.toBe(0);
  expect(wrongToken.stderr).toMatch(/wrong bearer token/);
  // An API token made on the root-only socket works over TCP within its role; a refusal says why (exit 11).
  const made = await cliJson<{ token: string }>(
    ['token', 'create', 'int-reader', '--role', 'read-only'],
    env,
  );
  const reader = { ...tcpEnv, VMLINK_CA: join(pkiDir, 'ca.pem'), VMLINK_TOKEN: made.token };
  const read = await runCli(['status', '--json'], reader);
  expect(read.code, read.stderr).toBe(0);
  const refused = await runCli(['vm', 'start', 'vm1'], reader);
  expect(refused.code, refused.stderr).toBe(11);
  expect(refused.stderr).toMatch(
    /int-reader \(role read-only\) may not POST \/v1\/vms\/:name\/start: it needs the operator role/,
  );
  const audit = await cliJson<Array<Record<string, unknown>>>(['audit'], env);
  expect(audit).toContainEqual(
    expect.objectContaining({ who: 'int-reader', route: '/v1/vms/:name/start', object: 'vm1', status: 403 }),
  );
  // The secret is everything after `vmlt_<id>_`: base64url, so it may hold `_` itself (its last piece alone can be
  // as short as one character, found in any audit line).
  const secret = made.token.split('_').slice(2).join('_');
  expect(secret).toHaveLength(43);
  expect(JSON.stringify(audit)).not.toContain(secret);
  const daemonLog = readFileSync(join(env.VMLINK_RUN_DIR, 'controller.log'), 'utf8');
  expect(daemonLog).toContain('controller listening');
  for (const s of [secret, USER_TOKEN]) expect(daemonLog).not.toContain(s);
});

it('rotates a host certificate while its agent keeps serving, and refuses the old one as revoked', async () => {
  const pki = await Pki.open(pkiDir);
  const before = await servedSerial(relaySocket('host1'), pki.caPem);
  const r = await cliJson<{ serial: string; previousSerial: string }>(['host', 'rotate-cert', 'host1'], env);
  expect(r.previousSerial).toBe(before);
  expect(await servedSerial(relaySocket('host1'), pki.caPem)).toBe(r.serial);
  expect(pki.refusal('host1', before)).toMatch(/revoked .*rotated/);
  // Heartbeats go on with the new certificate: a live host's stored lastSeen moves every LAST_SEEN_REFRESH_MS
  // (a refused one would be a missed heartbeat, written at once).
  const since = Date.now();
  await waitFor(
    'a heartbeat after the rotation',
    async () => {
      const h = await hostState('host1');
      return h.state === 'up' && h.missed === 0 && h.lastSeen && Date.parse(h.lastSeen) > since
        ? h
        : undefined;
    },
    LAST_SEEN_REFRESH_MS + 10_000,
  );
  expect((await new AgentClient('host1', `https+unix://${relaySocket('host1')}`).health()).ok).toBe(true);
});

it('revokes a host that leaves the spec: the controller refuses its certificate from then on', async () => {
  const without = join(root, 'without.yaml');
  writeFileSync(
    without,
    WITH_NET.replace('hosts: [{ name: host1 }, { name: host2 }]', 'hosts: [{ name: host1 }]').replace(
      'hosts: [{ name: host1, address: 192.168.73.10 }, { name: host2, address: 192.168.73.11 }]',
      'hosts: [{ name: host1, address: 192.168.73.10 }]\n  peers: [{ name: host2, address: 192.168.73.11 }]',
    ),
  );
  const b = await runCli(['apply', '-f', without], env);
  expect(b.code, b.stderr).toBe(0);
  expect(b.stdout).toMatch(/revoked the certificate of host2/);
  // host2's agent still runs and serves its (now revoked) certificate: the controller's side refuses it.
  await expect(
    new AgentClient('host2', `https+unix://${relaySocket('host2')}`).health(),
  ).rejects.toMatchObject({
    kind: 'unauthorized',
    message: expect.stringMatching(/agent of host2 .*was revoked .*left the spec/),
  });
  // And an agent refuses it too: presented as a client to host1's agent, host2's revoked certificate opens nothing.
  const host2 = readCredentials(join(env.VMLINK_STATE_DIR, 'lab', LAB, 'host2', 'tls'))!;
  const asHost2 = new HttpClient(`https+unix://${relaySocket('host1')}`, {
    name: 'agent of host1',
    tls: { ca: host2.ca, key: host2.key, cert: host2.cert },
  });
  await expect(asHost2.get('/v1/health', AgentHealthSchema)).rejects.toMatchObject({
    kind: 'unauthorized',
    message: expect.stringMatching(/agent of host1 refused the client: .*names host "host2", not controller/),
  });
  const events = await cliJson<Array<{ kind: string; message: string }>>(['events'], env);
  expect(events.some((e) => e.kind === 'host.revoked' && e.message.startsWith('host2'))).toBe(true);
});
