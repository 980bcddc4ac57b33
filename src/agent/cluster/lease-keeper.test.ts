import { describe, expect, it } from 'vitest';
import type { FenceReport, HostLeaseValue } from '../../shared/cluster.js';
import { FakeClock, T0 } from './fake-clock.test-util.js';
import { type EtcdView, type HoldVerdict, LeaseKeeper, type LeaseOps } from './lease-keeper.js';

/** etcd as the keeper sees it: up or down, leases that can be made to vanish; every call recorded. */
class FakeEtcd implements LeaseOps {
  up = true;
  /** Leases etcd no longer has (keepalive answers TTL 0). */
  gone = new Set<string>();
  private next = 100;
  calls: string[] = [];
  grants: string[] = [];
  liveness: HostLeaseValue[] = [];
  reports: FenceReport[] = [];
  revoked: string[] = [];
  constructor(private readonly clock: FakeClock) {}
  private at = () => `${(this.clock.t - T0) / 1000}s`;
  private check(op: string) {
    this.calls.push(`${this.at()} ${op}${this.up ? '' : ' (down)'}`);
    if (!this.up) throw new Error('etcd unreachable');
  }
  async grant(ttl: number) {
    this.check(`grant ${ttl}`);
    const id = String(this.next++);
    this.grants.push(id);
    return id;
  }
  async keepAlive(id: string) {
    this.check(`keepalive ${id}`);
    return this.gone.has(id) ? 0 : 10;
  }
  async putLiveness(_id: string, v: HostLeaseValue) {
    this.check('put liveness');
    this.liveness.push(v);
  }
  async putFenceReport(r: FenceReport) {
    this.check('put fence report');
    this.reports.push(r);
  }
  async revoke(id: string) {
    this.check(`revoke ${id}`);
    this.revoked.push(id);
  }
  async view(): Promise<EtcdView> {
    return this.up ? 'ok' : 'unreachable';
  }
}

const quiet = { info: () => {}, warn: () => {}, error: () => {} };

function setup(peers: () => HoldVerdict = () => ({ proven: false, reason: 'host b did not answer' })) {
  const clock = new FakeClock();
  const etcd = new FakeEtcd(clock);
  const fences: Array<{ at: number; reason: string }> = [];
  const peerChecks: number[] = [];
  let verdict = peers;
  const keeper = new LeaseKeeper({
    host: 'a',
    heartbeatSeconds: 5,
    ops: etcd,
    clock,
    log: quiet,
    fenceVms: async (reason) => {
      fences.push({ at: clock.t - T0, reason });
      return ['vm1', 'vm2'];
    },
    checkPeers: async () => {
      peerChecks.push(clock.t - T0);
      return verdict();
    },
  });
  return {
    clock,
    etcd,
    keeper,
    fences,
    peerChecks,
    setPeers: (p: () => HoldVerdict) => {
      verdict = p;
    },
  };
}

describe('LeaseKeeper', () => {
  it('grants, writes the liveness key and renews every heartbeat while etcd answers', async () => {
    const { clock, etcd, keeper, fences } = setup();
    await keeper.start();
    expect(keeper.status()).toMatchObject({ host: 'a', mode: 'held', etcd: 'ok', leaseId: '100' });
    expect(etcd.liveness).toEqual([
      { host: 'a', leaseId: '100', since: '2026-12-01T10:00:00.000Z', heartbeatSeconds: 5 },
    ]);
    await clock.to(31_000);
    expect(etcd.calls).toEqual([
      '0s grant 10',
      '0s put liveness',
      '5s keepalive 100',
      '10s keepalive 100',
      '15s keepalive 100',
      '20s keepalive 100',
      '25s keepalive 100',
      '30s keepalive 100',
    ]);
    expect(keeper.status()).toMatchObject({
      mode: 'held',
      lastRenewal: '2026-12-01T10:00:30.000Z',
      deadline: '2026-12-01T10:00:38.000Z',
    });
    expect(keeper.held).toBe(true);
    expect(fences).toEqual([]);
  });

  it('recovers a lost renewal by retrying every 500 ms, without fencing', async () => {
    const { clock, etcd, keeper, fences, peerChecks } = setup();
    await keeper.start();
    await clock.to(4_900);
    etcd.up = false;
    await clock.to(5_000);
    expect(keeper.status()).toMatchObject({ mode: 'renewing', deadline: '2026-12-01T10:00:08.000Z' });
    expect(keeper.held).toBe(false);
    await clock.to(6_200);
    etcd.up = true;
    await clock.to(6_500);
    expect(keeper.status().mode).toBe('held');
    expect(etcd.calls.slice(2)).toEqual([
      '5s keepalive 100 (down)',
      '5.5s keepalive 100 (down)',
      '6s keepalive 100 (down)',
      '6.5s keepalive 100',
    ]);
    // The next renewal a heartbeat after the one that worked; the deadline from its send time.
    await clock.to(11_500);
    expect(etcd.calls.at(-1)).toBe('11.5s keepalive 100');
    expect(keeper.status().deadline).toBe('2026-12-01T10:00:19.500Z');
    await clock.to(40_000);
    expect(fences).toEqual([]);
    expect(peerChecks).toEqual([]);
  });

  it('fences exactly once at the deadline (last confirmed send + TTL - 2 s) when the outage is not proven', async () => {
    const { clock, etcd, keeper, fences, peerChecks } = setup();
    await keeper.start();
    await clock.to(4_000);
    etcd.up = false;
    await clock.to(7_999);
    expect(fences).toEqual([]);
    // The peers are asked in time for their verdict to be in at the deadline.
    expect(peerChecks).toEqual([7_200]);
    await clock.to(8_000);
    expect(fences).toEqual([
      {
        at: 8_000,
        reason: 'no lease renewal confirmed since 2026-12-01T10:00:00.000Z; host b did not answer',
      },
    ]);
    // Before etcd could expire the lease (granted no earlier than 0 s, TTL 10 s).
    expect(fences[0]!.at).toBeLessThan(10_000);
    expect(keeper.status()).toMatchObject({
      mode: 'fenced',
      fencedAt: '2026-12-01T10:00:08.000Z',
      fencedVms: ['vm1', 'vm2'],
    });
    expect(keeper.status().leaseId).toBeUndefined();
    await clock.to(60_000);
    expect(fences).toHaveLength(1);
    // Only new leases are asked for while fenced (never a keepalive of the old one).
    const after = etcd.calls.filter((c) => Number.parseFloat(c) > 8);
    expect(after.length).toBeGreaterThan(50);
    expect(after.every((c) => / (grant 10|revoke 100) \(down\)$/.test(c))).toBe(true);
  });

  it('fences at once when etcd answers that the lease is gone (TTL 0)', async () => {
    const { clock, etcd, keeper, fences, peerChecks } = setup();
    await keeper.start();
    etcd.gone.add('100');
    await clock.to(5_000);
    expect(fences).toEqual([{ at: 5_000, reason: 'lease 100 is gone (etcd answered TTL 0)' }]);
    expect(peerChecks).toEqual([]);
    // etcd answers: a new lease at once, and the report of the fence.
    await clock.to(5_500);
    expect(keeper.status()).toMatchObject({ mode: 'held', leaseId: '101' });
    expect(etcd.reports).toEqual([
      {
        host: 'a',
        at: '2026-12-01T10:00:05.000Z',
        reason: 'lease 100 is gone (etcd answered TTL 0)',
        vms: ['vm1', 'vm2'],
      },
    ]);
  });

  it('holds (no fence) when every peer proves the outage is etcd-wide, and is held again when etcd is back', async () => {
    const { clock, etcd, keeper, fences, peerChecks } = setup(() => ({
      proven: true,
      reason: 'b, c answered: none holds its lease',
    }));
    await keeper.start();
    await clock.to(4_000);
    etcd.up = false;
    await clock.to(8_000);
    expect(keeper.status().mode).toBe('hold');
    expect(keeper.held).toBe(false);
    await clock.to(30_000);
    expect(fences).toEqual([]);
    // Asked once before the deadline, then every second in hold.
    expect(peerChecks.slice(0, 4)).toEqual([7_200, 9_000, 10_000, 11_000]);
    expect(peerChecks.length).toBeGreaterThan(20);
    // etcd is back (its new leader extended every lease): the old lease renews.
    etcd.up = true;
    await clock.to(30_500);
    expect(keeper.status()).toMatchObject({ mode: 'held', leaseId: '100' });
    const checks = peerChecks.length;
    await clock.to(45_000);
    expect(peerChecks.length).toBe(checks);
    expect(fences).toEqual([]);
  });

  it('in hold, fences at once when a peer holds its lease again while this host still cannot renew', async () => {
    const { clock, etcd, keeper, fences, setPeers } = setup(() => ({
      proven: true,
      reason: 'all in outage',
    }));
    await keeper.start();
    await clock.to(4_000);
    etcd.up = false;
    await clock.to(12_000);
    expect(keeper.status().mode).toBe('hold');
    setPeers(() => ({ proven: false, heldPeer: 'b', reason: 'host b holds its lease' }));
    await clock.to(13_000);
    expect(fences).toEqual([{ at: 13_000, reason: 'in hold: host b holds its lease' }]);
    expect(keeper.status().mode).toBe('fenced');
  });

  it('in hold, a peer holding its lease first triggers one more renewal: when it works, no fence', async () => {
    const { clock, etcd, keeper, fences, setPeers } = setup(() => ({
      proven: true,
      reason: 'all in outage',
    }));
    await keeper.start();
    await clock.to(4_000);
    etcd.up = false;
    await clock.to(12_100);
    setPeers(() => {
      etcd.up = true; // etcd came back between this host's retries
      return { proven: false, heldPeer: 'b', reason: 'host b holds its lease' };
    });
    await clock.to(13_000);
    expect(fences).toEqual([]);
    expect(keeper.status().mode).toBe('held');
  });

  it('in hold, fences at once when a peer stops answering', async () => {
    const { clock, etcd, keeper, fences, setPeers } = setup(() => ({
      proven: true,
      reason: 'all in outage',
    }));
    await keeper.start();
    await clock.to(4_000);
    etcd.up = false;
    await clock.to(15_000);
    setPeers(() => ({ proven: false, reason: 'host c did not answer (timeout)' }));
    await clock.to(16_000);
    expect(fences).toEqual([{ at: 16_000, reason: 'in hold: host c did not answer (timeout)' }]);
  });

  it('after a fence, gets a NEW lease, writes the fence report and the liveness key, and is held', async () => {
    const { clock, etcd, keeper, fences } = setup();
    await keeper.start();
    await clock.to(4_000);
    etcd.up = false;
    await clock.to(20_000);
    expect(fences).toHaveLength(1);
    expect(keeper.held).toBe(false);
    etcd.up = true;
    await clock.to(20_500);
    expect(keeper.status()).toMatchObject({
      mode: 'held',
      leaseId: '101',
      fencedAt: '2026-12-01T10:00:08.000Z',
      fencedVms: ['vm1', 'vm2'],
    });
    expect(etcd.grants).toEqual(['100', '101']);
    expect(etcd.reports).toEqual([
      {
        host: 'a',
        at: '2026-12-01T10:00:08.000Z',
        reason: expect.stringContaining('no lease renewal confirmed since 2026-12-01T10:00:00.000Z'),
        vms: ['vm1', 'vm2'],
      },
    ]);
    expect(etcd.liveness.at(-1)).toEqual({
      host: 'a',
      leaseId: '101',
      since: '2026-12-01T10:00:20.500Z',
      heartbeatSeconds: 5,
    });
    expect(etcd.calls.slice(-3)).toEqual(['20.5s grant 10', '20.5s put fence report', '20.5s put liveness']);
    await clock.to(25_500);
    expect(etcd.calls.at(-1)).toBe('25.5s keepalive 101');
    expect(fences).toHaveLength(1);
  });

  it('at start without etcd: fences at once unless the outage is proven (then holds and gets its lease later)', async () => {
    const a = setup();
    a.etcd.up = false;
    await a.keeper.start();
    expect(a.fences).toEqual([
      { at: 0, reason: 'no lease at start (etcd unreachable); host b did not answer' },
    ]);
    const b = setup(() => ({ proven: true, reason: 'all in outage' }));
    b.etcd.up = false;
    await b.keeper.start();
    expect(b.keeper.status().mode).toBe('hold');
    await b.clock.to(3_000);
    b.etcd.up = true;
    await b.clock.to(3_500);
    expect(b.keeper.status()).toMatchObject({ mode: 'held', leaseId: '100' });
    expect(b.fences).toEqual([]);
    expect(b.etcd.reports).toEqual([]);
  });

  it('a verified status renews first: held only while etcd answers (a peer asking must not fence on a stale held)', async () => {
    const { clock, etcd, keeper } = setup();
    await keeper.start();
    await clock.to(1_000);
    expect((await keeper.verifiedStatus(400)).mode).toBe('held');
    expect(etcd.calls.at(-1)).toBe('1s keepalive 100');
    // Just renewed: answered without another renewal.
    await clock.to(1_200);
    expect((await keeper.verifiedStatus(400)).mode).toBe('held');
    expect(etcd.calls.at(-1)).toBe('1s keepalive 100');
    etcd.up = false;
    await clock.to(2_000);
    expect(keeper.status().mode).toBe('held'); // it has not tried etcd since
    expect((await keeper.verifiedStatus(400)).mode).toBe('renewing');
  });

  it('refuses a heartbeat that leaves no room before the fence deadline', () => {
    const clock = new FakeClock();
    expect(
      () =>
        new LeaseKeeper({
          host: 'a',
          heartbeatSeconds: 2,
          ops: new FakeEtcd(clock),
          clock,
          fenceVms: async () => [],
          checkPeers: async () => ({ proven: false, reason: '' }),
        }),
    ).toThrow(/a cluster heartbeat of 2 s leaves no time .*use 3 s or more/);
  });

  it('stop revokes the lease and renews no more', async () => {
    const { clock, etcd, keeper } = setup();
    await keeper.start();
    await keeper.stop();
    expect(etcd.revoked).toEqual(['100']);
    await clock.to(30_000);
    expect(etcd.calls.filter((c) => c.includes('keepalive'))).toEqual([]);
  });
});
