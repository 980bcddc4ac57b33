import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterMembers, LeaseMode, LeaseStatus } from '../../shared/cluster.js';
import { MEMBERS_CACHE_FILE, type Peer, PeerCheck } from './peers.js';

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
