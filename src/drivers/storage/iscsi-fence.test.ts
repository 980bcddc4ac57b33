import { mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConflictError, FencedError, InvalidRequestError } from '../../shared/errors.js';
import type { PoolConfig, VolumeFence } from '../../shared/storage.js';
import {
  closeForeignSessions,
  FENCE_CLOSE_ROUNDS,
  FenceStateStore,
  fencedAcl,
  foreignConnections,
  judgeFence,
  ownerAcl,
  samePeer,
  volumeSessions,
} from './iscsi-fence.js';
import { targetProblems, wantedTarget } from './iscsi-targets.js';
import type { TgtClient } from './tgt-client.js';
import { TgtError } from './tgt-protocol.js';
import type { TgtSession, TgtTarget } from './tgt-show.js';

const pool: PoolConfig = {
  name: 'san',
  type: 'iscsi',
  path: '/var/lib/vmlink/pools/san',
  clients: ['192.168.50.0/24', '10.9.0.7/32'],
  chap: { user: 'vmlink', secret: 'san-chap' },
  iscsi: { tgtControlPort: 1 },
};
const fenced = (host: string, address: string, token: string): VolumeFence => ({
  host,
  address,
  token,
  at: '2026-12-01T10:00:00.000Z',
});

describe('judgeFence: the newest token wins, a stale one changes nothing', () => {
  const have = fenced('host1', '192.168.50.11', '1000');

  it('takes a first token and a newer one (compared as 64-bit numbers, not as text)', () => {
    expect(judgeFence('san', 'v1', undefined, { host: 'host1', address: '192.168.50.11', token: '7' })).toBe(
      'first',
    );
    expect(judgeFence('san', 'v1', have, { host: 'host2', address: '192.168.50.12', token: '1001' })).toBe(
      'newer',
    );
    // "999" > "1000" as text; as numbers it is older.
    expect(() =>
      judgeFence('san', 'v1', have, { host: 'host2', address: '192.168.50.12', token: '999' }),
    ).toThrow(FencedError);
    // Beyond 2^53: etcd revisions are int64.
    const big = fenced('host1', '192.168.50.11', '9007199254740993');
    expect(
      judgeFence('san', 'v1', big, { host: 'host2', address: '192.168.50.12', token: '9007199254740994' }),
    ).toBe('newer');
    expect(() =>
      judgeFence('san', 'v1', big, { host: 'host2', address: '192.168.50.12', token: '9007199254740992' }),
    ).toThrow(FencedError);
  });

  it('refuses a stale token naming both tokens and both owners', () => {
    const e = (() => {
      try {
        judgeFence('san', 'v1', have, { host: 'host3', address: '192.168.50.13', token: '999' });
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(FencedError);
    expect(e).toMatchObject({ kind: 'fenced', subject: 'volume/san/v1' });
    expect((e as Error).message).toBe(
      'volume san/v1: fencing token 999 (for host host3) is older than token 1000, which fenced it to host host1 (192.168.50.11); refused, nothing changed',
    );
  });

  it('is idempotent for the same token and owner, and refuses the same token for another owner', () => {
    expect(judgeFence('san', 'v1', have, { host: 'host1', address: '192.168.50.11', token: '1000' })).toBe(
      'same',
    );
    expect(() =>
      judgeFence('san', 'v1', have, { host: 'host2', address: '192.168.50.12', token: '1000' }),
    ).toThrow(ConflictError);
    expect(() =>
      judgeFence('san', 'v1', have, { host: 'host1', address: '192.168.50.99', token: '1000' }),
    ).toThrow(/already fenced it to host host1 \(192\.168\.50\.11\), not host1 \(192\.168\.50\.99\)/);
  });
});

describe('ownerAcl: the pool clients stay the outer bound', () => {
  it('takes an address inside a client network or equal to a /32 client, as a bare address', () => {
    expect(ownerAcl(pool, '192.168.50.12')).toBe('192.168.50.12');
    expect(ownerAcl(pool, '10.9.0.7')).toBe('10.9.0.7');
    // A pool without clients (any address, CHAP guards it) takes any owner.
    expect(ownerAcl({ ...pool, clients: undefined } as unknown as PoolConfig, '172.16.0.1')).toBe(
      '172.16.0.1',
    );
  });

  it('refuses an owner outside the clients, and anything but an IPv4 address', () => {
    expect(() => ownerAcl(pool, '10.9.0.8')).toThrow(
      "pool san: owner address 10.9.0.8 is outside the pool's clients (192.168.50.0/24, 10.9.0.7/32): a fence cannot let in a host the pool does not",
    );
    for (const bad of ['ALL', '192.168.50.0/24', '192.168.050.1', '::1', '192.168.50.1,ALL', ''])
      expect(() => ownerAcl(pool, bad), bad).toThrow(InvalidRequestError);
  });
});

describe('a live migration: the owner and its target both let in', () => {
  const peer = { host: 'host2', address: '192.168.50.12' };
  it('the ACL names the owner and the migration target; a peer outside the clients is left out, an owner outside lets nobody in', () => {
    expect(fencedAcl(pool, undefined)).toBeUndefined();
    expect(fencedAcl(pool, fenced('host1', '192.168.50.11', '7'))).toEqual(['192.168.50.11']);
    expect(fencedAcl(pool, { ...fenced('host1', '192.168.50.11', '7'), peer })).toEqual([
      '192.168.50.11',
      '192.168.50.12',
    ]);
    expect(
      fencedAcl(pool, { ...fenced('host1', '192.168.50.11', '7'), peer: { host: 'x', address: '10.1.1.1' } }),
    ).toEqual(['192.168.50.11']);
    expect(fencedAcl(pool, { ...fenced('host1', '10.1.1.1', '7'), peer })).toBeNull();
    const file = '/var/lib/vmlink/pools/san/v1.img';
    expect(wantedTarget('st1', pool, 'v1', file, ['192.168.50.11', '192.168.50.12']).acls).toEqual([
      '192.168.50.11',
      '192.168.50.12',
    ]);
  });

  it('the same token for the same owner with a peer added or dropped is the same fence (the record is rewritten)', () => {
    const have = { ...fenced('host1', '192.168.50.11', '7'), peer };
    expect(judgeFence('san', 'v1', have, { host: 'host1', address: '192.168.50.11', token: '7' })).toBe(
      'same',
    );
    expect(samePeer(have.peer, undefined)).toBe(false);
    expect(samePeer(have.peer, { ...peer })).toBe(true);
    expect(samePeer(undefined, undefined)).toBe(true);
    // The target takes over only with a newer token.
    expect(() =>
      judgeFence('san', 'v1', have, { host: 'host2', address: '192.168.50.12', token: '7' }),
    ).toThrow(ConflictError);
    expect(judgeFence('san', 'v1', have, { host: 'host2', address: '192.168.50.12', token: '8' })).toBe(
      'newer',
    );
  });

  it("keeps the owner's and the target's sessions, closes every other one", () => {
    const t = target([session(1, '192.168.50.11'), session(2, '192.168.50.12'), session(3, '192.168.50.13')]);
    expect(foreignConnections(t, ['192.168.50.11', '192.168.50.12']).map((c) => c.address)).toEqual([
      '192.168.50.13',
    ]);
  });
});

describe('wantedTarget with a fence', () => {
  const file = '/var/lib/vmlink/pools/san/v1.img';
  it('replaces the pool clients with the owner address; null lets nobody in', () => {
    expect(wantedTarget('st1', pool, 'v1', file).acls).toEqual(['192.168.50.0/24', '10.9.0.7']);
    expect(wantedTarget('st1', pool, 'v1', file, '192.168.50.12').acls).toEqual(['192.168.50.12']);
    expect(wantedTarget('st1', pool, 'v1', file, null).acls).toEqual([]);
    // A fenced target showing the pool's clients (an apply reopened it, tgtd restarted) is a problem to repair.
    const have: TgtTarget = {
      tid: 1,
      name: 'iqn.2026-12.io.vmlink:st1.san.v1',
      sessions: [],
      luns: [{ lun: 1, type: 'disk', backingStorePath: file }],
      accounts: ['vmlink'],
      outgoingAccounts: [],
      acls: ['192.168.50.0/24', '10.9.0.7'],
    };
    expect(targetProblems(wantedTarget('st1', pool, 'v1', file, '192.168.50.12'), have)).toEqual([
      'target iqn.2026-12.io.vmlink:st1.san.v1: allows 192.168.50.0/24, 10.9.0.7, not 192.168.50.12',
    ]);
  });
});

const session = (nexus: number, address: string, cid = 0): TgtSession => ({
  nexus,
  initiator: `iqn.2008-11.org.linux-kvm:${nexus}`,
  addresses: [address],
  connections: [{ cid, address }],
});
const target = (sessions: TgtSession[]): TgtTarget => ({
  tid: 3,
  name: 'iqn.2026-12.io.vmlink:st1.san.v1',
  sessions,
  luns: [],
  accounts: [],
  outgoingAccounts: [],
  acls: [],
});

describe('foreign sessions', () => {
  it('lists the connections from other addresses, and sessions tgtd shows without a connection id', () => {
    const t = target([
      session(1, '192.168.50.11'),
      session(2, '192.168.50.12', 1),
      { nexus: 5, initiator: 'iqn.x', addresses: ['192.168.50.13'], connections: [] },
    ]);
    expect(foreignConnections(t, '192.168.50.12')).toEqual([
      { sid: 1, cid: 0, initiator: 'iqn.2008-11.org.linux-kvm:1', address: '192.168.50.11' },
      { sid: 5, cid: -1, initiator: 'iqn.x', address: '192.168.50.13' },
    ]);
    expect(foreignConnections(undefined, '192.168.50.12')).toEqual([]);
    expect(volumeSessions(t)).toEqual([
      { initiator: 'iqn.2008-11.org.linux-kvm:1', addresses: ['192.168.50.11'] },
      { initiator: 'iqn.2008-11.org.linux-kvm:2', addresses: ['192.168.50.12'] },
      { initiator: 'iqn.x', addresses: ['192.168.50.13'] },
    ]);
  });

  /** A tgtd whose sessions close when asked (or never, or vanish on their own), recording the requests. */
  function fakeTgtd(sessions: TgtSession[], opts: { stubborn?: boolean; vanished?: boolean } = {}) {
    const calls: string[] = [];
    let live = [...sessions];
    const client = {
      closeConnection: async (tid: number, sid: number, cid: number) => {
        calls.push(`close ${tid} ${sid} ${cid}`);
        if (opts.vanished) {
          live = live.filter((s) => s.nexus !== sid);
          throw new TgtError(6, `close connection ${cid} of session ${sid} on target ${tid}`);
        }
        if (!opts.stubborn) live = live.filter((s) => s.nexus !== sid);
        return '';
      },
    } as unknown as TgtClient;
    return { client, calls, find: async () => target(live) };
  }

  it('closes every other address, keeps the owner, and looks again until none is left', async () => {
    const t = fakeTgtd([
      session(1, '192.168.50.11'),
      session(2, '192.168.50.12'),
      session(4, '192.168.50.14', 2),
    ]);
    const closed = await closeForeignSessions(t.client, t.find, '192.168.50.12', 'fencing');
    expect(t.calls).toEqual(['close 3 1 0', 'close 3 4 2']);
    expect(closed.map((c) => c.address)).toEqual(['192.168.50.11', '192.168.50.14']);
    expect((await t.find()).sessions.map((s) => s.nexus)).toEqual([2]);
  });

  it('takes a session that ended meanwhile as closed', async () => {
    const t = fakeTgtd([session(1, '192.168.50.11')], { vanished: true });
    expect(await closeForeignSessions(t.client, t.find, '192.168.50.12', 'fencing')).toEqual([]);
  });

  it('gives up with an error naming the initiators still logged in', async () => {
    const t = fakeTgtd([session(1, '192.168.50.11')], { stubborn: true });
    await expect(
      closeForeignSessions(t.client, t.find, '192.168.50.12', 'fencing san/v1 to host2'),
    ).rejects.toThrow(
      `fencing san/v1 to host2: initiator(s) iqn.2008-11.org.linux-kvm:1 (192.168.50.11) still logged in after ${FENCE_CLOSE_ROUNDS} attempts to close them`,
    );
    expect(t.calls).toHaveLength(FENCE_CLOSE_ROUNDS);
  }, 20_000);
});

describe('FenceStateStore', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-fence-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps each pool in its own 0600 file, written whole, and forgets a pool with no fenced volume', async () => {
    const store = new FenceStateStore(dir);
    expect(await store.read('san')).toEqual(new Map());
    const v = new Map([
      ['v2', fenced('host2', '192.168.50.12', '12')],
      ['v1', fenced('host1', '192.168.50.11', '9')],
    ]);
    await store.write('san', v);
    const file = join(dir, 'fence', 'san.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'fence')).mode & 0o777).toBe(0o700);
    expect(await store.read('san')).toEqual(v);
    expect(Object.keys(JSON.parse(readFileSync(file, 'utf8')).volumes)).toEqual(['v1', 'v2']);
    await store.write('san', new Map());
    expect(() => statSync(file)).toThrow();
    await store.remove('san'); // missing: fine
  });

  it('refuses a file that is a link, names another pool, or holds what the wire would refuse', async () => {
    const store = new FenceStateStore(dir);
    await mkdir(join(dir, 'fence'));
    const file = join(dir, 'fence', 'san.json');
    const body = (volumes: unknown, p = 'san') => JSON.stringify({ version: 1, pool: p, volumes });
    writeFileSync(file, body({ v1: fenced('host1', 'ALL', '9') }));
    await expect(store.read('san')).rejects.toThrow(/state file .*san\.json: unexpected content/);
    writeFileSync(file, body({ v1: { ...fenced('host1', '192.168.50.11', '9'), extra: 1 } }));
    await expect(store.read('san')).rejects.toThrow(/unexpected content/);
    writeFileSync(file, body({ '../v1': fenced('host1', '192.168.50.11', '9') }));
    await expect(store.read('san')).rejects.toThrow(/unexpected content/);
    writeFileSync(file, body({}, 'other'));
    await expect(store.read('san')).rejects.toThrow(/names pool other/);
    rmSync(file);
    writeFileSync(join(dir, 'elsewhere.json'), body({}));
    symlinkSync(join(dir, 'elsewhere.json'), file);
    await expect(store.read('san')).rejects.toThrow(/symbolic link/);
    await expect(store.read('../x')).rejects.toThrow(InvalidRequestError);
  });
});
