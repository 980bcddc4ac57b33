// The agent's cluster membership against a real etcd (test/helpers/etcd.ts): the lease and its liveness key, the
// self-fence before etcd could expire the lease, a new lease and the fence report after, the owner check with real
// owner records and their revisions, and the outage hold between two agents asking each other over real mutual TLS
// (the agent's own server and route), with one agent cut off from etcd by a TCP relay the test controls.
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo, Server, Socket } from 'node:net';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { EtcdMembership } from '../../src/agent/cluster/membership.js';
import { createAgentServer } from '../../src/agent/server.js';
import { HostCredentials } from '../../src/controller/pki/service.js';
import type { HypervisorDriver } from '../../src/drivers/hypervisor/types.js';
import { RecordingRunner } from '../../src/exec/runner.js';
import {
  type ClusterMembers,
  clusterKeys,
  FenceReportSchema,
  HostLeaseValueSchema,
  type OwnerRecord,
  ownerKey,
} from '../../src/shared/cluster.js';
import { FencedError } from '../../src/shared/errors.js';
import { listen } from '../../src/shared/http/server.js';
import { readCredentials } from '../../src/shared/tls.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';

const HB = 3; // heartbeat 3 s (the least allowed): lease TTL 6 s, fence deadline 4 s after the last confirmed renewal was sent
const TTL_MS = 2 * HB * 1000;

let etcd: TestEtcd;
let client: Etcd3;
const root = mkdtempSync(join(tmpdir(), 'vmlink-it-lease-'));
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeAll(async () => {
  etcd = await startTestEtcd();
  client = new Etcd3({ hosts: etcd.endpoint });
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  client?.close();
  await etcd?.close();
  rmSync(root, { recursive: true, force: true });
});

async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 30_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A membership whose fence callback records when it was called and "stops" the VMs it was given. */
function member(host: string, endpoint: string, vms: string[] = ['vm1']) {
  const fences: Array<{ at: number; reason: string }> = [];
  const m = new EtcdMembership({
    host,
    connection: { endpoints: [endpoint] },
    heartbeatSeconds: HB,
    stateDir: mkdtempSync(join(root, `${host}-`)),
    fenceVms: async (reason) => {
      fences.push({ at: Date.now(), reason });
      return vms;
    },
  });
  cleanups.push(() => m.stop());
  return { m, fences };
}

const getJson = async (key: string) => {
  const v = await client.get(key).string();
  return v === null ? undefined : (JSON.parse(v) as unknown);
};

/** Writes an owner record as the etcd store does (JSON under /vmlink/kv/owners/<vm>); returns its version. */
async function writeOwner(vm: string, host: string): Promise<string> {
  const rec: OwnerRecord = { vm, host, reason: 'spec', since: new Date().toISOString() };
  const r = await client
    .put(clusterKeys.kv(ownerKey(vm)))
    .value(JSON.stringify(rec))
    .exec();
  return String(r.header.revision);
}

describe('one agent on a real etcd', () => {
  it('holds a lease with its liveness key; fences before etcd could expire it; takes a new lease and reports', async () => {
    const { m, fences } = member('lh1', etcd.endpoint, ['vm-a', 'vm-b']);
    await m.start();
    const s = m.status();
    expect(s).toMatchObject({ host: 'lh1', mode: 'held', etcd: 'ok', heartbeatSeconds: HB });
    const live = HostLeaseValueSchema.parse(await getJson(clusterKeys.hostLease('lh1')));
    expect(live).toMatchObject({ host: 'lh1', leaseId: s.leaseId, heartbeatSeconds: HB });
    // The key is attached to the lease, and etcd counts its TTL.
    const held = await client.leaseClient.leaseTimeToLive({ ID: s.leaseId!, keys: true });
    expect(Number(held.TTL)).toBeGreaterThan(0);
    expect(held.keys.map((k) => k.toString())).toEqual([clusterKeys.hostLease('lh1')]);
    // Renewals keep it (wait past one TTL).
    await new Promise((r) => setTimeout(r, TTL_MS + 500));
    expect(m.status()).toMatchObject({ mode: 'held', leaseId: s.leaseId });
    expect(fences).toEqual([]);

    // etcd dies (SIGKILL): renewals fail, no membership is known, so nothing proves an etcd-wide outage.
    const lastBefore = Date.parse(m.status().lastRenewal!);
    const killedAt = Date.now();
    await etcd.stop(true);
    const f = await waitFor('the fence', () => fences[0], TTL_MS + 10_000);
    const confirmed = Date.parse(/since (\S+);/.exec(f.reason)![1]!);
    expect(confirmed).toBeGreaterThanOrEqual(lastBefore);
    // Fenced before the lease could end in etcd (TTL from the send time of the last confirmed renewal).
    expect(f.at).toBeLessThan(confirmed + TTL_MS);
    console.log(
      `fence: ${f.at - killedAt} ms after etcd was killed, ${confirmed + TTL_MS - f.at} ms before the lease could end (TTL ${TTL_MS} ms)`,
    );
    expect(f.reason).toMatch(/no cluster membership known/);
    expect(m.status()).toMatchObject({ mode: 'fenced', fencedVms: ['vm-a', 'vm-b'] });
    await expect(m.assertOwner('vm-a', { token: '1' })).rejects.toBeInstanceOf(FencedError);

    // etcd is back: a NEW lease, the fence report, the liveness key on the new lease.
    await etcd.restart();
    await waitFor('a new lease', () => m.status().mode === 'held', 20_000);
    const again = m.status();
    expect(again.leaseId).not.toBe(s.leaseId);
    const report = FenceReportSchema.parse(await getJson(clusterKeys.fenceReport('lh1')));
    expect(report).toMatchObject({ host: 'lh1', vms: ['vm-a', 'vm-b'], reason: f.reason });
    expect(HostLeaseValueSchema.parse(await getJson(clusterKeys.hostLease('lh1'))).leaseId).toBe(
      again.leaseId,
    );
    expect(fences).toHaveLength(1);

    // A clean stop revokes the lease: the key goes at once.
    await m.stop();
    expect(await getJson(clusterKeys.hostLease('lh1'))).toBeUndefined();
  });

  it('starts a VM only for its owner record naming this host at this revision; nothing while etcd is down', async () => {
    const { m } = member('oh1', etcd.endpoint);
    await m.start();
    const token = await writeOwner('ovm1', 'oh1');
    await m.assertOwner('ovm1', { token });
    // No token, an old token after a reassignment, another host, a missing record: refused, saying why.
    await expect(m.assertOwner('ovm1', undefined)).rejects.toThrow(/carries no fencing token/);
    const newer = await writeOwner('ovm1', 'oh1');
    await expect(m.assertOwner('ovm1', { token })).rejects.toThrow(
      new RegExp(
        `carried token ${token} but the owner record \\(host oh1\\) holds token ${newer}: a stale token`,
      ),
    );
    await m.assertOwner('ovm1', { token: newer });
    const moved = await writeOwner('ovm1', 'oh2');
    await expect(m.assertOwner('ovm1', { token: moved })).rejects.toThrow(
      /VM ovm1 is not started on host oh1: its owner record names host oh2/,
    );
    await expect(m.assertOwner('ovm-none', { token: '5' })).rejects.toThrow(/it has no owner record/);
    // At an agent's start: which of its running VMs are owned elsewhere now.
    expect(await m.ownedElsewhere(['ovm1', 'ovm-none'])).toEqual(['ovm1']);
    await client
      .put(clusterKeys.kv(ownerKey('ovm2')))
      .value('{"vm":"ovm2"')
      .exec();
    await expect(m.assertOwner('ovm2', { token: '5' })).rejects.toThrow(/not JSON/);
    // etcd down: refused at once (the lease is not held past its deadline either way).
    const t2 = await writeOwner('ovm3', 'oh1');
    await etcd.stop(true);
    try {
      await expect(m.assertOwner('ovm3', { token: t2 })).rejects.toBeInstanceOf(FencedError);
    } finally {
      await etcd.restart();
    }
    await waitFor('the lease again', () => m.status().mode === 'held', 20_000);
    await m.assertOwner('ovm3', { token: t2 });
  });
});

/** A TCP relay to etcd that the test can cut (a host's network partitioned away from etcd). */
async function relay(
  to: string,
): Promise<{ endpoint: string; cut(): void; mend(): void; close(): Promise<void> }> {
  const target = new URL(to);
  const socks = new Set<Socket>();
  let open = true;
  const server: Server = net.createServer((c) => {
    if (!open) return c.destroy();
    const up: Socket = net.connect(Number(target.port), target.hostname);
    socks.add(c).add(up);
    c.pipe(up).pipe(c);
    const drop = () => {
      c.destroy();
      up.destroy();
      socks.delete(c);
      socks.delete(up);
    };
    c.on('error', drop).on('close', drop);
    up.on('error', drop).on('close', drop);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cut: () => {
      open = false;
      for (const s of socks) s.destroy();
    },
    mend: () => {
      open = true;
    },
    close: () => {
      open = false;
      for (const s of socks) s.destroy();
      return new Promise((r) => server.close(() => r(undefined)));
    },
  };
}

describe('two agents asking each other over mutual TLS', () => {
  let pkiCreds: HostCredentials;
  const apps: FastifyInstance[] = [];
  beforeAll(async () => {
    pkiCreds = await HostCredentials.open(join(root, 'pki'));
  });
  afterAll(async () => {
    for (const a of apps) await a.close().catch(() => {});
  });

  /** An agent (no VMs) with its membership and its TLS server on a free port, serving the real lease route. */
  async function agentOf(host: string, etcdEndpoint: string) {
    const tlsDir = join(root, `${host}-tls`);
    await pkiCreds.ensureLabHost(host, tlsDir);
    const creds = readCredentials(tlsDir)!;
    const fences: Array<{ at: number; reason: string }> = [];
    const m = new EtcdMembership({
      host,
      connection: { endpoints: [etcdEndpoint] },
      heartbeatSeconds: HB,
      stateDir: mkdtempSync(join(root, `${host}-state-`)),
      peerTls: creds,
      fenceVms: async (reason) => {
        fences.push({ at: Date.now(), reason });
        return [`${host}-vm`];
      },
    });
    cleanups.push(() => m.stop());
    const agent = new Agent({
      host,
      runner: new RecordingRunner(),
      networks: {},
      hypervisor: { list: async () => [] } as unknown as HypervisorDriver,
      stateDir: join(root, `${host}-agent`),
      cluster: m,
    });
    const app = await createAgentServer(agent, { tls: creds, prerequisites: async () => [] });
    const port = await new Promise<number>((r) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => r(p));
      });
    });
    await listen(app, `https://127.0.0.1:${port}`);
    apps.push(app);
    return { host, m, fences, address: `https://127.0.0.1:${port}` };
  }

  it('an etcd-wide outage: both hold their VMs; the one still cut off fences once the other holds its lease again', async () => {
    const cut = await relay(etcd.endpoint);
    cleanups.push(() => cut.close());
    const a = await agentOf('ph1', cut.endpoint);
    const b = await agentOf('ph2', etcd.endpoint);
    const members: ClusterMembers = {
      heartbeatSeconds: HB,
      hosts: [
        { name: 'ph1', agent: a.address },
        { name: 'ph2', agent: b.address },
      ],
    };
    await client.put(clusterKeys.members).value(JSON.stringify(members)).exec();
    await a.m.start();
    await b.m.start();
    // Each reads the membership after its lease is held.
    await waitFor('the membership', () => a.m.peers.known() && b.m.peers.known());
    // A changed membership is read again at the next renewal (its revision moved: an unchanged one is not read whole).
    const count = (n: number) =>
      a.m.peers.known()?.hosts.length === n && b.m.peers.known()?.hosts.length === n;
    const more = { ...members, hosts: [...members.hosts, { name: 'ph3', agent: 'https://127.0.0.1:9' }] };
    await client.put(clusterKeys.members).value(JSON.stringify(more)).exec();
    await waitFor('the changed membership', () => count(3) || undefined, 10_000);
    await client.put(clusterKeys.members).value(JSON.stringify(members)).exec();
    await waitFor('the membership as it was', () => count(2) || undefined, 10_000);

    // etcd stops for everyone: past the deadline both are in hold, neither fences.
    const stoppedAt = Date.now();
    await etcd.stop(true);
    await waitFor('both in hold', () => a.m.status().mode === 'hold' && b.m.status().mode === 'hold', 15_000);
    console.log(`hold: both in hold ${Date.now() - stoppedAt} ms after etcd stopped`);
    await new Promise((r) => setTimeout(r, 3_000)); // three more rounds of peer checks
    expect(a.m.status().mode).toBe('hold');
    expect(b.m.status().mode).toBe('hold');
    expect([...a.fences, ...b.fences]).toEqual([]);
    await expect(a.m.assertOwner('x', { token: '1' })).rejects.toThrow(/lease hold/);

    // etcd comes back, but ph1 stays cut off: ph2 renews (held), ph1 learns it from ph2 and fences at once.
    cut.cut();
    await etcd.restart();
    const backAt = Date.now();
    await waitFor('ph2 held', () => b.m.status().mode === 'held', 20_000);
    const heldAt = Date.now();
    const f = await waitFor('ph1 fenced', () => a.fences[0], 10_000);
    console.log(
      `hold -> fence: ph2 held ${heldAt - backAt} ms after etcd restarted; ph1 fenced ${f.at - heldAt} ms after that`,
    );
    expect(f.reason).toMatch(/in hold: host ph2 holds its lease/);
    expect(b.fences).toEqual([]);
    // ph1's old lease was extended by etcd's restart: its VMs were stopped long before it can end there.
    const leaseKey = HostLeaseValueSchema.parse(await getJson(clusterKeys.hostLease('ph1')));
    const ttl = await client.leaseClient.leaseTimeToLive({ ID: leaseKey.leaseId });
    expect(Number(ttl.TTL)).toBeGreaterThan(0);

    // Partitioned (etcd up, ph1 cut off): back to its network it takes a new lease and reports the fence.
    cut.mend();
    await waitFor('ph1 held again', () => a.m.status().mode === 'held', 20_000);
    expect(FenceReportSchema.parse(await getJson(clusterKeys.fenceReport('ph1'))).vms).toEqual(['ph1-vm']);

    // A partition of ph1 alone: at its deadline ph2 answers `held`, so ph1 fences without a hold.
    const cutAt = Date.now();
    cut.cut();
    const f2 = await waitFor('ph1 fenced again', () => a.fences[1], 15_000);
    console.log(`partition: ph1 fenced ${f2.at - cutAt} ms after it was cut off (TTL ${TTL_MS} ms)`);
    expect(f2.reason).toMatch(/host ph2 holds its lease/);
    expect(b.m.status().mode).toBe('held');
    expect(b.fences).toEqual([]);
  });
});
