// The controllers' coordination against a real etcd (one member on loopback): the election (one active; a dead
// active replaced within its lease, and it steps down before the other takes over), host leases seen appearing and
// expiring, and etcd members' health with etcd stopped.
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ELECTION_TTL_S_DEFAULT,
  type EtcdCampaign,
  EtcdCoordination,
} from '../../src/controller/cluster/etcd-coordination.js';
import type { ControllerInfo, LiveHost } from '../../src/controller/cluster/types.js';
import { clusterKeys, ETCD_PREFIX } from '../../src/shared/cluster.js';
import { UnavailableError } from '../../src/shared/errors.js';
import { etcdClient } from '../../src/shared/etcd.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';

let etcd: TestEtcd;
let admin: Etcd3;
const clients: Etcd3[] = [];
const coords: EtcdCoordination[] = [];

function client(): Etcd3 {
  const c = etcdClient({ endpoints: [etcd.endpoint] });
  clients.push(c);
  return c;
}

function coordination(c = client(), heartbeatSeconds = 1): EtcdCoordination {
  const co = new EtcdCoordination(c, { connection: { endpoints: [etcd.endpoint] }, heartbeatSeconds });
  coords.push(co);
  return co;
}

const info = (name: string): ControllerInfo => ({
  id: `${name}/${process.pid}/${Math.random().toString(16).slice(2)}`,
  name,
  address: `unix:///tmp/${name}.sock`,
  since: new Date().toISOString(),
});

/** A campaign's events with the time of each. */
function recorder() {
  const log: Array<{ what: 'elected' | 'lost'; at: number; reason?: string }> = [];
  return {
    log,
    events: {
      elected: () => log.push({ what: 'elected', at: Date.now() }),
      lost: (reason: string) => log.push({ what: 'lost', at: Date.now(), reason }),
    },
    count: (what: 'elected' | 'lost') => log.filter((e) => e.what === what).length,
  };
}

async function until(what: string, f: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  etcd = await startTestEtcd();
  admin = client();
});

afterAll(async () => {
  for (const co of coords) await co.close().catch(() => undefined);
  for (const c of clients) c.close();
  await etcd?.close();
});

describe('election', () => {
  it('elects exactly one of two candidates, and the other takes over within the lease when it dies', async () => {
    await admin.delete().prefix(ETCD_PREFIX).exec();
    const ca = client();
    const a = coordination(ca);
    const b = coordination();
    const ra = recorder();
    const rb = recorder();
    const ia = info('ctl1');
    const ib = info('ctl2');
    const campA = a.campaign(ia, ra.events);
    await until('ctl1 elected', () => ra.count('elected') === 1);
    const campB = b.campaign(ib, rb.events);
    // ctl2 stands by while ctl1 lives (a few renewals of ctl1's lease).
    await new Promise((r) => setTimeout(r, 2 * ELECTION_TTL_S_DEFAULT * 1000));
    expect(rb.count('elected')).toBe(0);
    expect(ra.count('lost')).toBe(0);
    expect(campA.holds()).toBe(true);
    expect(campB.holds()).toBe(false);
    expect(await b.activeController()).toEqual(ia);

    // ctl1 dies without resigning: its client goes away, its keepalives stop.
    const killedAt = Date.now();
    ca.close();
    await until('ctl2 elected', () => rb.count('elected') === 1, 20_000);
    const takeoverMs = rb.log[0]!.at - killedAt;
    // ctl1 stepped down (by its own clock) before ctl2 was elected: never two actives at once.
    expect(ra.count('lost')).toBe(1);
    expect(ra.log.find((e) => e.what === 'lost')!.at).toBeLessThanOrEqual(rb.log[0]!.at);
    expect(campA.holds()).toBe(false);
    expect(campB.holds()).toBe(true);
    expect(await b.activeController()).toEqual(ib);
    console.log(
      `election takeover after the active controller died: ${takeoverMs} ms (lease TTL ${ELECTION_TTL_S_DEFAULT} s)`,
    );
    expect(takeoverMs).toBeLessThan(ELECTION_TTL_S_DEFAULT * 1000 + 10_000);
    await campA.resign();
    await campB.resign();
    expect(await b.activeController()).toBeUndefined();
  });

  it('hands over at once on resign, and a campaign that lost etcd campaigns again by itself', async () => {
    await admin.delete().prefix(ETCD_PREFIX).exec();
    const a = coordination();
    const b = coordination();
    const ra = recorder();
    const rb = recorder();
    const campA = a.campaign(info('ctl1'), ra.events);
    await until('ctl1 elected', () => ra.count('elected') === 1);
    const campB: EtcdCampaign = b.campaign(info('ctl2'), rb.events);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    await campA.resign();
    await until('ctl2 elected', () => rb.count('elected') === 1, 10_000);
    // A resign revokes the lease: no waiting out the TTL.
    expect(Date.now() - t0).toBeLessThan(ELECTION_TTL_S_DEFAULT * 1000);
    expect(ra.count('lost')).toBe(0); // resigning is not losing

    // etcd goes away: ctl2 gives up the role within its lease, then wins again once etcd is back.
    await etcd.stop(true);
    const stoppedAt = Date.now();
    try {
      await until('ctl2 lost', () => rb.count('lost') === 1, 15_000);
      expect(Date.now() - stoppedAt).toBeLessThanOrEqual(ELECTION_TTL_S_DEFAULT * 1000 + 1_000);
      expect(campB.holds()).toBe(false);
      await expect(b.activeController()).rejects.toThrow(UnavailableError);
    } finally {
      await etcd.restart();
    }
    await until('ctl2 elected again', () => rb.count('elected') === 2, 30_000);
    expect(campB.holds()).toBe(true);
    await campB.resign();
  });

  it('resigns within a bounded time while etcd is away, and the next controller is elected once it is back', async () => {
    await admin.delete().prefix(ETCD_PREFIX).exec();
    const a = coordination();
    const ra = recorder();
    const campA = a.campaign(info('ctl1'), ra.events);
    await until('ctl1 elected', () => ra.count('elected') === 1);
    await etcd.stop(true);
    try {
      await until('ctl1 lost', () => ra.count('lost') === 1, 15_000);
      const t0 = Date.now();
      await campA.resign();
      expect(Date.now() - t0).toBeLessThan(10_000);
    } finally {
      await etcd.restart();
    }
    const b = coordination();
    const rb = recorder();
    const campB = b.campaign(info('ctl2'), rb.events);
    // ctl1's key may outlive etcd's restart by its TTL (a restarted etcd extends every lease): bounded by that.
    await until('ctl2 elected', () => rb.count('elected') === 1, 20_000);
    expect(ra.count('elected')).toBe(1);
    await campB.resign();
  });

  it('refuses a garbage leader record instead of trusting it', async () => {
    await admin.delete().prefix(ETCD_PREFIX).exec();
    const a = coordination();
    await admin.put(`${clusterKeys.election}/1`).value('{"id":1}').exec();
    expect(await a.activeController()).toBeUndefined();
    await admin.delete().prefix(ETCD_PREFIX).exec();
  });
});

describe('host leases', () => {
  it('sees a lease key appear and disappear when its lease expires, skipping keys that are not leases', async () => {
    await admin.delete().prefix(ETCD_PREFIX).exec();
    const co = coordination(client(), 1);
    const seen: LiveHost[][] = [];
    const stop = co.watchHosts((h) => seen.push(h));
    await until('first callback', () => seen.length >= 1);
    expect(seen[0]).toEqual([]);

    // A host's agent: a 2 s lease (etcd's minimum here), kept alive by hand.
    const lease = admin.lease(2, { autoKeepAlive: false });
    const id = await lease.grant();
    const value = { host: 'host1', leaseId: id, since: new Date().toISOString(), heartbeatSeconds: 1 };
    const t0 = Date.now();
    await lease.put(clusterKeys.hostLease('host1')).value(JSON.stringify(value));
    // Keys the coordination must not believe: no lease (never expires), another host's name, garbage.
    await admin.put(clusterKeys.hostLease('host2')).value(JSON.stringify({ ...value, host: 'host2' }));
    const other = admin.lease(30);
    await other.put(clusterKeys.hostLease('host3')).value(JSON.stringify({ ...value, host: 'host1' }));
    await other.put(clusterKeys.hostLease('host4')).value('{"host":');
    await until('host1 seen', () => seen.some((s) => s.some((h) => h.host === 'host1')), 10_000);
    const live = await co.liveHosts();
    expect(live.map((h) => h.host)).toEqual(['host1']);
    expect(live[0]!.value).toEqual(value);
    expect(live[0]!.seenAt).toBeGreaterThanOrEqual(t0);
    // seenAt is the first sighting, not the latest read.
    await new Promise((r) => setTimeout(r, 300));
    expect((await co.liveHosts())[0]!.seenAt).toBe(live[0]!.seenAt);
    await lease.keepaliveOnce();

    // The agent dies: no more keepalives. etcd deletes the key when the lease ends; the watch reports it.
    const diedAt = Date.now();
    await until('host1 gone', () => seen.at(-1)!.length === 0, 15_000);
    const goneMs = Date.now() - diedAt;
    console.log(`host lease expiry seen ${goneMs} ms after the last keepalive (TTL 2 s)`);
    expect(goneMs).toBeGreaterThanOrEqual(1_000);
    expect(await co.liveHosts()).toEqual([]);

    // It comes back with a new lease: young again.
    const lease2 = admin.lease(5);
    const id2 = await lease2.grant();
    const t1 = Date.now();
    await lease2.put(clusterKeys.hostLease('host1')).value(JSON.stringify({ ...value, leaseId: id2 }));
    await until('host1 back', () => seen.at(-1)!.length === 1, 10_000);
    expect(seen.at(-1)![0]!.seenAt).toBeGreaterThanOrEqual(t1);
    stop();
    const n = seen.length;
    await lease2.revoke();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(seen.length).toBe(n); // stopped: no more calls
    await other.revoke();
    lease.release();
  });

  it('keeps the last known set while etcd is unreachable, and catches up after', async () => {
    await admin.delete().prefix(ETCD_PREFIX).exec();
    const co = coordination(client(), 1);
    const seen: LiveHost[][] = [];
    const stop = co.watchHosts((h) => seen.push(h));
    const lease = admin.lease(30);
    await lease
      .put(clusterKeys.hostLease('hostA'))
      .value(
        JSON.stringify({ host: 'hostA', leaseId: await lease.grant(), since: 'x', heartbeatSeconds: 5 }),
      );
    await until('hostA seen', () => seen.at(-1)?.length === 1, 10_000);
    const n = seen.length;
    await etcd.stop(true);
    try {
      await new Promise((r) => setTimeout(r, 3_000));
      // Unknown is not "no hosts": nothing was reported while etcd was away.
      expect(seen.length).toBe(n);
      await expect(co.liveHosts()).rejects.toThrow(UnavailableError);
    } finally {
      await etcd.restart();
    }
    await lease.revoke().catch(() => undefined);
    // The lease may have been revoked, or kept by etcd's restart; either way the watcher follows etcd again.
    await until(
      'caught up',
      async () => {
        const now = await co.liveHosts().catch(() => undefined);
        return (
          now !== undefined &&
          JSON.stringify(seen.at(-1)!.map((h) => h.host)) === JSON.stringify(now.map((h) => h.host))
        );
      },
      20_000,
    );
    stop();
  });
});

describe('members', () => {
  it('reports the member healthy and leader, and unhealthy with the error when it does not answer', async () => {
    const co = coordination();
    const up = await co.members();
    expect(up).toHaveLength(1);
    expect(up[0]).toMatchObject({
      name: 'm1',
      endpoint: etcd.endpoint,
      healthy: true,
      hasLeader: true,
      isLeader: true,
    });
    await etcd.stop(true);
    try {
      const t0 = Date.now();
      const down = await co.members();
      expect(Date.now() - t0).toBeLessThan(15_000);
      expect(down).toHaveLength(1);
      expect(down[0]!.healthy).toBe(false);
      expect(down[0]!.endpoint).toBe(etcd.endpoint);
      expect(down[0]!.error).toMatch(/etcd/);
    } finally {
      await etcd.restart();
    }
    await until('healthy again', async () => (await co.members())[0]?.healthy === true, 20_000);
  });
});
