import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterEach, describe, expect, it } from 'vitest';
import { type ClusterMembers, clusterKeys } from '../../shared/cluster.js';
import { FakeClock, T0 } from './fake-clock.test-util.js';
import { EtcdMembership } from './membership.js';
import { membersReadDelayMs } from './peers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const members: ClusterMembers = {
  heartbeatSeconds: 5,
  hosts: [
    { name: 'h0001', agent: 'http://127.0.0.1:1' },
    { name: 'h0002', agent: 'http://127.0.0.1:2' },
  ],
};

/**
 * The part of an etcd3 client EtcdMembership uses, in memory: leases renewed at once, and the membership key,
 * whose whole reads (not the keys-only probe) hang until `release` when `slow` is set. Every call is stamped.
 */
class FakeEtcdClient {
  calls: Array<{ op: string; at: number }> = [];
  membersRevision = '7';
  slow = true;
  private hung: Array<() => void> = [];
  constructor(private readonly clock: FakeClock) {}
  private stamp(op: string) {
    this.calls.push({ op, at: this.clock.t - T0 });
  }
  release() {
    for (const r of this.hung.splice(0)) r();
  }
  readonly kv = {
    range: async (req: { key: Buffer; keys_only?: boolean }) => {
      const key = req.key.toString();
      if (key !== clusterKeys.members) return { kvs: [] };
      this.stamp(req.keys_only ? 'probe members' : 'read members');
      if (!req.keys_only && this.slow) await new Promise<void>((r) => this.hung.push(r));
      const value = Buffer.from(req.keys_only ? '' : JSON.stringify(members));
      return { kvs: [{ key: req.key, value, mod_revision: this.membersRevision }] };
    },
    put: async (req: { key: Buffer }) => {
      this.stamp(`put ${req.key.toString()}`);
      return {};
    },
  };
  readonly leaseClient = {
    leaseGrant: async () => {
      this.stamp('grant');
      return { ID: '42', TTL: '10' };
    },
    leaseKeepAlive: async () => {
      const s = Object.assign(new EventEmitter(), {
        write: () => {
          this.stamp('keepalive');
          queueMicrotask(() => s.emit('data', { ID: '42', TTL: '10' }));
        },
        end: () => {},
        cancel: () => {},
      });
      return s;
    },
    leaseRevoke: async () => {
      this.stamp('revoke');
      return {};
    },
  };
  readonly maintenance = { status: async () => ({ leader: '1' }) };
  close() {}
}

function setup(host: string) {
  const clock = new FakeClock();
  const etcd = new FakeEtcdClient(clock);
  const stateDir = mkdtempSync(join(tmpdir(), 'vmlink-membership-'));
  dirs.push(stateDir);
  const m = new EtcdMembership({
    host,
    connection: { endpoints: ['http://127.0.0.1:1'] },
    heartbeatSeconds: 5,
    stateDir,
    fenceVms: async () => [],
    client: etcd as unknown as Etcd3,
    clock,
  });
  const at = (op: string) => etcd.calls.filter((c) => c.op === op).map((c) => c.at);
  return { clock, etcd, m, at };
}

describe('EtcdMembership: the membership read after a renewal', () => {
  it('never holds up a renewal: with the read hanging, the lease is renewed every heartbeat and stays held', async () => {
    const { clock, etcd, m, at } = setup('h0001');
    const delay = membersReadDelayMs('h0001', 5_000);
    expect(delay).toBeGreaterThan(0);
    await m.start();
    await clock.to(60_000);
    // The grant's refresh looked after this host's delay, saw the change and read it; that read never answered
    // (the refreshes of later renewals are the one in flight: no more looks).
    expect(at('probe members')).toEqual([delay]);
    expect(at('read members')).toEqual([delay]);
    expect(at('keepalive')).toEqual(Array.from({ length: 12 }, (_, i) => (i + 1) * 5_000));
    expect(m.status().mode).toBe('held');
    expect(m.keeper.held).toBe(true);
    // Once it answers, the next renewal's refresh looks after the delay: unchanged, nothing read.
    etcd.release();
    await m.peers.refresh(); // the one in flight (its cache file is written on the real disk)
    expect(m.peers.known()).toEqual(members);
    await clock.to(65_000 + delay);
    expect(at('probe members')).toEqual([delay, 65_000 + delay]);
    expect(at('read members')).toHaveLength(1);
    // A new revision is read at the next look.
    etcd.slow = false;
    etcd.membersRevision = '9';
    await clock.to(70_000 + delay);
    expect(at('read members')).toEqual([delay, 70_000 + delay]);
    await m.stop();
  });

  it('a stop during the delay neither looks nor reads', async () => {
    const { clock, m, at } = setup('h0002');
    const delay = membersReadDelayMs('h0002', 5_000);
    expect(delay).toBeGreaterThan(1);
    await m.start();
    await clock.to(1);
    await m.stop();
    await clock.to(delay + 1);
    expect(at('probe members')).toEqual([]);
    expect(at('read members')).toEqual([]);
  });
});
