// The etcd store against a real etcd (one member on loopback): the same conformance suite SQLite passes, plus what
// only a shared, networked store has: two stores (two controllers) on one etcd, concurrent appenders, values over
// the limit, pages larger than the client accepts, and etcd going away and coming back.
import { randomBytes } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compress } from 'zstd-napi';
import { fleetLikeText, storeConformance } from '../../src/controller/store/conformance.js';
import { EtcdStore, isEtcdStore, RANGE_PAGE_KEYS } from '../../src/controller/store/etcd.js';
import { openStore, storeKind } from '../../src/controller/store/registry.js';
import { clusterKeys, ETCD_PREFIX } from '../../src/shared/cluster.js';
import { InvalidRequestError, InvalidStateError, UnavailableError } from '../../src/shared/errors.js';
import { etcdClient } from '../../src/shared/etcd.js';
import {
  ETCD_RESPONSE_MAX_BYTES,
  ETCD_VALUE_MAX_BYTES,
  STORE_VALUE_MAX_BYTES,
} from '../../src/shared/limits.js';
import { ZSTD_MAGIC } from '../../src/shared/zstd.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';

let etcd: TestEtcd;
let admin: Etcd3;
const clients: Etcd3[] = [];

/** A fresh client of the test etcd (closed in afterAll). */
function client(): Etcd3 {
  const c = etcdClient({ endpoints: [etcd.endpoint] });
  clients.push(c);
  return c;
}

/** Removes everything vmlink wrote: each test starts on an empty store. */
async function wipe(): Promise<void> {
  await admin.delete().prefix(ETCD_PREFIX).exec();
}

beforeAll(async () => {
  etcd = await startTestEtcd();
  admin = client();
});

afterAll(async () => {
  for (const c of clients) c.close();
  await etcd?.close();
});

storeConformance('etcd', async () => {
  await wipe();
  return new EtcdStore(client(), { ownsClient: false });
});

describe('etcd store: shared by several controllers', () => {
  it('opens through the registry, and two stores see each other’s writes', async () => {
    await wipe();
    expect(storeKind(`etcd+http://${etcd.endpoint.slice('http://'.length)}`)).toBe('etcd');
    const a = openStore(`etcd+http://${etcd.endpoint.slice('http://'.length)}`);
    const b = openStore(`etcd+http://${etcd.endpoint.slice('http://'.length)}`);
    try {
      expect(isEtcdStore(a)).toBe(true);
      await a.put('specs/current', { text: 'x' });
      expect(await b.get('specs/current')).toEqual({ text: 'x' });
      const v = (await b.getVersioned('specs/current'))!.version;
      // b replaces what a wrote; a, still holding the old version, loses its compare-and-set.
      const v2 = await b.putIf('specs/current', { text: 'y' }, v);
      expect(v2).toBeDefined();
      expect(await a.putIf('specs/current', { text: 'z' }, v)).toBeUndefined();
      expect(await a.get('specs/current')).toEqual({ text: 'y' });
      // The raw key is where the contract says.
      expect(await admin.get(clusterKeys.kv('specs/current')).json()).toEqual({ text: 'y' });
      // Racing compare-and-sets from two stores: exactly one wins.
      const race = await Promise.all([
        ...Array.from({ length: 4 }, () => a.putIf('specs/current', 'a', v2!)),
        ...Array.from({ length: 4 }, () => b.putIf('specs/current', 'b', v2!)),
      ]);
      expect(race.filter((r) => r !== undefined)).toHaveLength(1);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('interleaves events from two writers with unique, growing ids', async () => {
    await wipe();
    const a = new EtcdStore(client());
    const b = new EtcdStore(client());
    const N = 40;
    const write = async (s: EtcdStore, who: string) => {
      const ids: number[] = [];
      for (let i = 0; i < N; i++) ids.push((await s.appendEvent('test', `${who}${i}`)).id);
      return ids;
    };
    const [ia, ib] = await Promise.all([write(a, 'a'), write(b, 'b')]);
    // Each writer's ids grow; no id is handed out twice.
    for (const ids of [ia, ib])
      for (let i = 1; i < ids.length; i++) expect(ids[i]!).toBeGreaterThan(ids[i - 1]!);
    expect(new Set([...ia, ...ib]).size).toBe(2 * N);
    const all = await a.events(1000);
    expect(all).toHaveLength(2 * N);
    for (let i = 1; i < all.length; i++) expect(all[i]!.id).toBeGreaterThan(all[i - 1]!.id);
    // Both writers' events are there, and each one's in the order it wrote them.
    const of = (who: string) => all.filter((e) => e.message.startsWith(who)).map((e) => e.message);
    expect(of('a')).toEqual(Array.from({ length: N }, (_, i) => `a${i}`));
    expect(of('b')).toEqual(Array.from({ length: N }, (_, i) => `b${i}`));
    // The newest few, oldest first, as both stores see them.
    expect((await b.events(3)).map((e) => e.id)).toEqual(all.slice(-3).map((e) => e.id));
  });

  it('prunes the audit trail to its bound with two writers', async () => {
    await wipe();
    const a = new EtcdStore(client());
    const b = new EtcdStore(client());
    const write = async (s: EtcdStore, who: string) => {
      for (let i = 0; i < 15; i++)
        await s.appendAudit(new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(), { who, i }, 10);
    };
    await Promise.all([write(a, 'a'), write(b, 'b')]);
    const all = await a.auditEntries(undefined, 100);
    expect(all).toHaveLength(10);
    expect(all[all.length - 1]!.id).toBe(30);
    expect(all[0]!.id).toBe(21);
    // Pruned entries are gone from etcd itself, not only hidden.
    const keys = await admin.getAll().prefix(clusterKeys.auditPrefix).keys();
    expect(keys.filter((k) => /\/\d{16}$/.test(k))).toHaveLength(10);
  });

  it('lists more keys than one page, and pages larger than the client accepts, in key order', async () => {
    await wipe();
    const s = new EtcdStore(client());
    const n = RANGE_PAGE_KEYS * 2 + 5;
    await Promise.all(Array.from({ length: n }, (_, i) => s.put(`many/${String(i).padStart(4, '0')}`, i)));
    const many = await s.list<number>('many/');
    expect(many.map((e) => e.value)).toEqual(Array.from({ length: n }, (_, i) => i));
    // Values at the limit as stored (plain, as an older vmlink wrote them: the store would compress these), more of
    // them than one response may hold in all: every page still fits.
    const big = 'x'.repeat(ETCD_VALUE_MAX_BYTES - 100);
    const count = RANGE_PAGE_KEYS + 3;
    expect(count * ETCD_VALUE_MAX_BYTES).toBeGreaterThan(ETCD_RESPONSE_MAX_BYTES);
    for (let i = 0; i < count; i++)
      await admin
        .put(clusterKeys.kv(`big/${String(i).padStart(3, '0')}`))
        .value(JSON.stringify({ i, big }))
        .exec();
    const bigs = await s.list<{ i: number; big: string }>('big/');
    expect(bigs.map((e) => e.value.i)).toEqual(Array.from({ length: count }, (_, i) => i));
    expect(bigs.every((e) => e.value.big.length === big.length)).toBe(true);
    await admin.delete().prefix(clusterKeys.kv('big/')).exec();
  });

  it('lists owner records (small, bounded on write) thousands a page; one over the bound is refused both ways', async () => {
    await wipe();
    const c = client();
    const s = new EtcdStore(c);
    const n = 5_000;
    const rec = (i: number) => ({
      vm: `vm-${i}`,
      host: `h${i % 100}`,
      reason: 'spec',
      since: new Date(0).toISOString(),
    });
    for (let i = 0; i < n; i += 500)
      await Promise.all(
        Array.from({ length: Math.min(500, n - i) }, (_, j) =>
          s.put(`owners/vm-${String(i + j).padStart(5, '0')}`, rec(i + j)),
        ),
      );
    let ranges = 0;
    const getAll = c.getAll.bind(c);
    c.getAll = () => {
      ranges++;
      return getAll();
    };
    const owners = await s.list<{ vm: string }>('owners/');
    expect(owners.map((o) => o.key)).toEqual(
      Array.from({ length: n }, (_, i) => `owners/vm-${String(i).padStart(5, '0')}`),
    );
    expect(ranges).toBeLessThanOrEqual(4); // was ceil(5,000 / RANGE_PAGE_KEYS) = 80
    c.getAll = getAll;
    const big = { ...rec(1), from: 'x'.repeat(5_000) };
    await expect(s.put('owners/big', big)).rejects.toThrow(
      /owners\/big is \d+ bytes; values under its prefix are at most 4096/,
    );
    await expect(s.putIf('owners/big', big, null)).rejects.toThrow(InvalidRequestError);
    await s.put('specs/big', big); // other prefixes keep the general limit
    // Written around the store: refused on read, naming the key, not parsed.
    await admin.put(clusterKeys.kv('owners/planted')).value(JSON.stringify(big)).exec();
    await expect(s.list('owners/')).rejects.toThrow(/owners\/planted holds \d+ bytes, over the 4096/);
  });

  it('refuses a value over the limit on write, and one found in etcd on read, naming the key', async () => {
    await wipe();
    const s = new EtcdStore(client());
    const tooBig = 'x'.repeat(STORE_VALUE_MAX_BYTES);
    await expect(s.put('specs/huge', tooBig)).rejects.toThrow(InvalidRequestError);
    // Over the etcd value limit even compressed (incompressible): refused, naming both sizes.
    const noise = randomBytes(ETCD_VALUE_MAX_BYTES).toString('base64');
    await expect(s.put('specs/huge', noise)).rejects.toThrow(
      /specs\/huge is \d+ bytes of JSON, \d+ compressed/,
    );
    await expect(s.put('specs/huge', tooBig)).rejects.toThrow(/specs\/huge/);
    await expect(s.putIf('specs/huge', tooBig, null)).rejects.toThrow(InvalidRequestError);
    await expect(s.appendEvent('x', tooBig)).rejects.toThrow(InvalidRequestError);
    expect(await s.get('specs/huge')).toBeUndefined();
    // Someone with write access put a larger value there directly: refused, never parsed.
    await admin
      .put(clusterKeys.kv('specs/planted'))
      .value(`"${'y'.repeat(ETCD_VALUE_MAX_BYTES)}"`)
      .exec();
    await expect(s.get('specs/planted')).rejects.toThrow(InvalidStateError);
    await expect(s.list('specs/')).rejects.toThrow(/specs\/planted/);
    // A planted zip bomb (a few KiB expanding past the store's value limit): refused by its declared size.
    await admin
      .put(clusterKeys.kv('specs/bomb'))
      .value(compress(Buffer.alloc(STORE_VALUE_MAX_BYTES + 1, 0x20)))
      .exec();
    await expect(s.get('specs/bomb')).rejects.toThrow(/specs\/bomb .*declares/);
    await admin.put(clusterKeys.kv('specs/garbage')).value('{not json').exec();
    await expect(s.get('specs/garbage')).rejects.toThrow(/not JSON/);
    // A tampered counter is refused, not trusted.
    await admin.put(`${clusterKeys.eventsPrefix}counter`).value('{"last":"x"}').exec();
    await expect(s.events(10)).rejects.toThrow(InvalidStateError);
    // A planted counter claiming 10^15 audit entries is not walked page by page.
    await admin.put(`${clusterKeys.auditPrefix}counter`).value('{"last":1000000000000000,"first":1}').exec();
    const t0 = Date.now();
    expect(await s.auditEntries(undefined, 1_000_000)).toEqual([]);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('stores a large value compressed as one key, and still reads one stored plain', async () => {
    await wipe();
    const s = new EtcdStore(client());
    const spec = { text: fleetLikeText(1_500_000), source: 'fleet.yaml' };
    await s.put('spec/current', spec);
    const stored = (await admin.get(clusterKeys.kv('spec/current')).buffer())!;
    expect(stored.subarray(0, 4)).toEqual(ZSTD_MAGIC);
    expect(stored.length).toBeLessThan(ETCD_VALUE_MAX_BYTES / 4);
    expect(await s.get('spec/current')).toEqual(spec);
    // A plain value written by an older vmlink reads as before.
    const old = { text: fleetLikeText(500_000), source: 'old.yaml' };
    await admin.put(clusterKeys.kv('spec/last-good')).value(JSON.stringify(old)).exec();
    expect(await s.list('spec/')).toEqual([
      { key: 'spec/current', value: spec },
      { key: 'spec/last-good', value: old },
    ]);
  });

  it('writes appends waiting together (one transaction), numbered in call order, pruned to the bound', async () => {
    await wipe();
    const s = new EtcdStore(client());
    const events = await Promise.all(Array.from({ length: 200 }, (_, i) => s.appendEvent('x', `e${i}`)));
    expect(events.map((e) => e.id)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    expect((await s.events(300)).map((e) => e.message)).toEqual(events.map((e) => e.message));
    // Far fewer revisions than appends: they went in batches.
    const rev = Number((await admin.get(`${clusterKeys.eventsPrefix}counter`).exec()).kvs[0]!.mod_revision);
    const base = Number(
      (await admin.get(`${clusterKeys.eventsPrefix}${'0'.repeat(15)}1`).exec()).kvs[0]!.mod_revision,
    );
    expect(rev - base).toBeLessThan(100);
    // A batch larger than the audit bound keeps only the newest `keep`.
    await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        s.appendAudit(`2026-01-01T00:00:${String(i).padStart(2, '0')}.000Z`, { i }, 5),
      ),
    );
    expect((await s.auditEntries(undefined, 100)).map((e) => e.record)).toEqual(
      [25, 26, 27, 28, 29].map((i) => ({ i })),
    );
    const left = await admin.getAll().prefix(clusterKeys.auditPrefix).keys();
    expect(left.length).toBe(6); // 5 entries and the counter
  });

  it('keeps the cluster members key (agents read it), validated', async () => {
    await wipe();
    const s = new EtcdStore(client());
    expect(await s.getClusterMembers()).toBeUndefined();
    const m = { heartbeatSeconds: 5, hosts: [{ name: 'host1', agent: 'https://10.0.0.1:7443' }] };
    expect(await s.putClusterMembers(m)).toBe(true);
    expect(await s.getClusterMembers()).toEqual(m);
    expect(await admin.get(clusterKeys.members).json()).toEqual(m);
    // The same membership again is not written (agents re-read it on every change): its revision stays.
    const rev = (await admin.get(clusterKeys.members).exec()).kvs[0]!.mod_revision;
    expect(await s.putClusterMembers({ ...m, hosts: [...m.hosts] })).toBe(false);
    expect((await admin.get(clusterKeys.members).exec()).kvs[0]!.mod_revision).toBe(rev);
    const m2 = { ...m, heartbeatSeconds: 10 };
    expect(await s.putClusterMembers(m2)).toBe(true);
    expect(await s.getClusterMembers()).toEqual(m2);
    await admin.put(clusterKeys.members).value('{"hosts":5}').exec();
    await expect(s.getClusterMembers()).rejects.toThrow(InvalidStateError);
  });
});

describe('etcd store: etcd going away', () => {
  it('fails with a clear UnavailableError while etcd is stopped (no hang), and works again after', async () => {
    await wipe();
    const s = new EtcdStore(client());
    await s.put('k', 1);
    await s.appendEvent('before', 'stop');
    await etcd.stop(true);
    try {
      const t0 = Date.now();
      const err = await s.get('k').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(UnavailableError);
      expect((err as UnavailableError).message).toMatch(/^etcd: get k: /);
      expect(Date.now() - t0).toBeLessThan(30_000);
      await expect(s.put('k', 2)).rejects.toThrow(UnavailableError);
      await expect(s.appendEvent('during', 'stop')).rejects.toThrow(UnavailableError);
    } finally {
      await etcd.restart();
    }
    // The client reconnects by itself (its breaker skips a failed member for 1 s): poll, bounded.
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        expect(await s.get('k')).toBe(1);
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    await s.put('k', 3);
    expect(await s.get('k')).toBe(3);
    const ev = await s.appendEvent('after', 'restart');
    expect((await s.events(10)).map((e) => [e.kind, e.id])).toEqual([
      ['before', ev.id - 1],
      ['after', ev.id],
    ]);
  });
});
