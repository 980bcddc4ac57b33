import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterMembers, LeaseMode, LeaseStatus } from '../../shared/cluster.js';
import { FakeClock, T0 } from './fake-clock.test-util.js';
import { MEMBERS_CACHE_FILE, membersReadDelayMs, type Peer, PeerCheck } from './peers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'vmlink-peers-'));
  dirs.push(d);
  return d;
};

const members: ClusterMembers = {
  heartbeatSeconds: 5,
  hosts: [
    { name: 'a', agent: 'https://10.0.0.1:7443' },
    { name: 'b', agent: 'https://10.0.0.2:7443' },
    { name: 'c', agent: 'https://10.0.0.3:7443' },
  ],
};
const status = (host: string, mode: LeaseMode): LeaseStatus => ({
  host,
  mode,
  etcd: 'unreachable',
  fencedVms: [],
});

function check(answers: Record<string, LeaseMode | Error | string>, m: ClusterMembers | null = members) {
  const asked: string[] = [];
  const pc = new PeerCheck({
    host: 'a',
    stateDir: tmp(),
    readMembers: async () => m ?? undefined,
    ask: async (p: Peer) => {
      asked.push(p.name);
      const a = answers[p.name];
      if (a instanceof Error) throw a;
      if (a === undefined) throw new Error('not asked for');
      // A string that is not a mode: the peer answers under another name.
      if (!['off', 'held', 'renewing', 'hold', 'fenced'].includes(a)) return status(a, 'renewing');
      return status(p.name, a as LeaseMode);
    },
  });
  return { pc, asked };
}

describe('PeerCheck', () => {
  it('proves an etcd-wide outage when every other host answers and none holds its lease', async () => {
    const { pc, asked } = check({ b: 'renewing', c: 'hold' });
    await pc.refresh();
    expect(await pc.check()).toEqual({
      proven: true,
      reason: 'every peer answered and none holds its lease: b renewing, c hold',
    });
    expect(asked.sort()).toEqual(['b', 'c']);
  });

  it('does not prove it when a peer holds its lease, names that peer', async () => {
    const { pc } = check({ b: 'held', c: 'renewing' });
    await pc.refresh();
    expect(await pc.check()).toEqual({
      proven: false,
      heldPeer: 'b',
      reason: 'host b holds its lease (etcd answers it)',
    });
  });

  it('does not prove it when a peer does not answer, answers as another host, or is not in the cluster', async () => {
    const a = check({ b: 'fenced', c: new Error('timeout after 800 ms') });
    await a.pc.refresh();
    expect(await a.pc.check()).toEqual({
      proven: false,
      reason: 'host c did not answer (timeout after 800 ms)',
    });
    const b = check({ b: 'fenced', c: 'b' });
    await b.pc.refresh();
    expect((await b.pc.check()).reason).toBe('host c answered as host "b"');
    const c = check({ b: 'off', c: 'renewing' });
    await c.pc.refresh();
    expect(await c.pc.check()).toEqual({
      proven: false,
      reason: 'host b is not in the cluster (lease mode off)',
    });
  });

  it('cannot prove anything without a membership', async () => {
    const { pc, asked } = check({}, null);
    await pc.refresh();
    expect(await pc.check()).toEqual({
      proven: false,
      reason: 'no cluster membership known: the outage cannot be proven',
    });
    expect(asked).toEqual([]);
  });

  it('a host alone in its cluster may hold (no other host could start its VMs)', async () => {
    const { pc } = check({}, { heartbeatSeconds: 5, hosts: [{ name: 'a', agent: 'https://10.0.0.1:7443' }] });
    await pc.refresh();
    expect((await pc.check()).proven).toBe(true);
  });

  it('caches the last membership on disk and reads it back when etcd is away; a bad cache is ignored', async () => {
    const dir = tmp();
    let fromEtcd: ClusterMembers | undefined = members;
    const make = () =>
      new PeerCheck({
        host: 'a',
        stateDir: dir,
        readMembers: async () => {
          if (!fromEtcd) throw new Error('etcd unreachable');
          return fromEtcd;
        },
        ask: async (p) => status(p.name, 'renewing'),
      });
    await make().refresh();
    expect(JSON.parse(readFileSync(join(dir, MEMBERS_CACHE_FILE), 'utf8'))).toEqual(members);
    fromEtcd = undefined;
    const again = make();
    await again.refresh(); // fails: keeps the cached value
    expect(again.known()).toEqual(members);
    expect((await again.check()).proven).toBe(true);
    writeFileSync(join(dir, MEMBERS_CACHE_FILE), '{"heartbeatSeconds": "x"}');
    expect(make().known()).toBeUndefined();
  });

  it('refuses to ask a plain http:// peer when it speaks TLS', async () => {
    const pc = new PeerCheck({
      host: 'a',
      stateDir: tmp(),
      readMembers: async () => ({
        heartbeatSeconds: 5,
        hosts: [{ name: 'b', agent: 'http://10.0.0.2:7443' }],
      }),
      tls: { ca: 'x', cert: 'y', key: 'z' },
    });
    await pc.refresh();
    expect(await pc.check()).toEqual({
      proven: false,
      reason:
        'host b did not answer (its address http://10.0.0.2:7443 is not https:// (this agent speaks TLS))',
    });
  });
});

describe('membersReadDelayMs', () => {
  it('is fixed by the host name, within the window, and none without one', () => {
    expect(membersReadDelayMs('h0042', 10_000)).toBe(membersReadDelayMs('h0042', 10_000));
    expect(membersReadDelayMs('h0042', 10_000)).not.toBe(membersReadDelayMs('h0043', 10_000));
    for (let i = 0; i < 1000; i++) {
      const d = membersReadDelayMs(`host-${i}`, 5_000);
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(5_000);
    }
    expect(membersReadDelayMs('h0042', 0)).toBe(0);
  });
});

describe('PeerCheck: looking for a changed membership and reading it', () => {
  /** One host's check on `clock` whose looks and reads are stamped; `changed` says what the look answers. */
  function host(
    name: string,
    clock: FakeClock,
    stateDir: string,
    reads: Array<{ host: string; at: number }>,
  ) {
    const state = { changed: true, probes: [] as number[] };
    const pc = new PeerCheck({
      host: name,
      stateDir,
      clock,
      spreadMs: 10_000,
      changed: async () => {
        state.probes.push(clock.t - T0);
        return state.changed;
      },
      readMembers: async () => {
        reads.push({ host: name, at: clock.t - T0 });
        state.changed = false;
        return members;
      },
    });
    return { name, pc, state };
  }

  it('spreads the looks and reads of 1,000 hosts renewing at once over the window', async () => {
    const clock = new FakeClock();
    const reads: Array<{ host: string; at: number }> = [];
    const dir = tmp();
    const hosts = Array.from({ length: 1000 }, (_, i) =>
      host(`h${String(i).padStart(4, '0')}`, clock, dir, reads),
    );
    // Every host renews at the same moment after a change (the simulated fleet's renewals fall together).
    const refreshes = hosts.map((h) => h.pc.refresh());
    await clock.to(1);
    expect(reads.length).toBeLessThan(5); // not all at once: ~0.1 per ms
    await clock.to(10_000);
    await Promise.all(refreshes);
    expect(reads).toHaveLength(1000);
    // Each read at its host's own delay, and each tenth of the window holds about a tenth of the reads.
    for (const r of reads) expect(r.at).toBe(membersReadDelayMs(r.host, 10_000));
    // Each looked once, right before its read.
    for (const h of hosts) expect(h.state.probes).toEqual([membersReadDelayMs(h.name, 10_000)]);
    const tenths = Array.from(
      { length: 10 },
      (_, k) => reads.filter((r) => Math.floor(r.at / 1000) === k).length,
    );
    for (const n of tenths) expect(n).toBeGreaterThan(60);
    for (const n of tenths) expect(n).toBeLessThan(140);
    // No more than 2 % of them in any 100 ms (all at once was the failure).
    const per100 = new Map<number, number>();
    for (const r of reads) per100.set(Math.floor(r.at / 100), (per100.get(Math.floor(r.at / 100)) ?? 0) + 1);
    expect(Math.max(...per100.values())).toBeLessThanOrEqual(20);
  });

  it('looks after its delay, reads nothing while the membership is unchanged, and reads a change', async () => {
    const clock = new FakeClock();
    const reads: Array<{ host: string; at: number }> = [];
    const { pc, state } = host('h0007', clock, tmp(), reads);
    const delay = membersReadDelayMs('h0007', 10_000);
    expect(delay).toBeGreaterThan(0);
    state.changed = false;
    const first = pc.refresh();
    // A refresh asked for while one waits is that one (one look per delay).
    expect(pc.refresh()).toBe(first);
    await clock.to(delay - 1);
    expect(state.probes).toEqual([]);
    await clock.to(delay);
    await first;
    expect(state.probes).toEqual([delay]);
    expect(reads).toEqual([]);
    state.changed = true;
    const r = pc.refresh(); // the next renewal, at `delay`
    await clock.to(2 * delay - 1);
    expect(reads).toEqual([]);
    expect(pc.known()).toBeUndefined();
    await clock.to(2 * delay);
    await r;
    expect(state.probes).toEqual([delay, 2 * delay]);
    expect(reads).toEqual([{ host: 'h0007', at: 2 * delay }]);
    expect(pc.known()).toEqual(members);
  });

  it('a stop ends the wait without looking or reading', async () => {
    const clock = new FakeClock();
    const reads: Array<{ host: string; at: number }> = [];
    const { pc, state } = host('h0007', clock, tmp(), reads);
    const r = pc.refresh();
    await clock.to(1);
    pc.stop();
    await r;
    await clock.to(20_000);
    expect(state.probes).toEqual([]);
    expect(reads).toEqual([]);
  });
});
