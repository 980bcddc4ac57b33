import { afterEach, describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../shared/errors.js';
import { STORE_VALUE_MAX_BYTES } from '../../shared/limits.js';
import type { Store } from './types.js';

/** A spec-like text of about `bytes` (a fleet's YAML: names and numbers that vary, as zstd finds them). */
export function fleetLikeText(bytes: number): string {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const h = String(i % 1000).padStart(4, '0');
    const line = `  - name: vm-h${h}-${String(i).padStart(5, '0')}\n    host: h${h}\n    cpus: ${1 + (i % 4)}\n    memory: ${256 << (i % 3)}Mi\n    nics: [{ network: overlay, mac: "52:54:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}" }]\n`;
    lines.push(line);
    n += line.length;
  }
  return lines.join('');
}

/** The shared conformance suite every Store implementation must pass. */
export function storeConformance(name: string, make: () => Promise<Store>): void {
  describe(`store conformance: ${name}`, () => {
    let store: Store | undefined;
    const open = async () => {
      store = await make();
      return store;
    };
    afterEach(async () => {
      await store?.close();
      store = undefined;
    });

    it('gets what it put, and undefined for missing keys', async () => {
      const s = await open();
      expect(await s.get('a')).toBeUndefined();
      await s.put('a', { x: [1, 'two', null] });
      expect(await s.get('a')).toEqual({ x: [1, 'two', null] });
    });

    it('overwrites and deletes, and deleting a missing key is fine', async () => {
      const s = await open();
      await s.put('k', 1);
      await s.put('k', 2);
      expect(await s.get('k')).toBe(2);
      await s.delete('k');
      await s.delete('k');
      expect(await s.get('k')).toBeUndefined();
    });

    it('lists by prefix in key order, treating % and _ literally', async () => {
      const s = await open();
      await s.put('hosts/b', 2);
      await s.put('hosts/a', 1);
      await s.put('hostsx', 3);
      await s.put('h%/_', 4);
      expect(await s.list('hosts/')).toEqual([
        { key: 'hosts/a', value: 1 },
        { key: 'hosts/b', value: 2 },
      ]);
      expect(await s.list('h%/')).toEqual([{ key: 'h%/_', value: 4 }]);
    });

    it('versions every write, later writes of any key with larger versions', async () => {
      const s = await open();
      await s.put('a', 1);
      const a1 = (await s.getVersioned<number>('a'))!;
      await s.put('b', 2);
      await s.put('a', 3);
      const a2 = (await s.getVersioned<number>('a'))!;
      const b = (await s.getVersioned<number>('b'))!;
      expect(a2.value).toBe(3);
      expect(BigInt(a1.version) < BigInt(b.version)).toBe(true);
      expect(BigInt(b.version) < BigInt(a2.version)).toBe(true);
      expect(await s.getVersioned('missing')).toBeUndefined();
      expect((await s.listVersioned<number>('')).map((e) => [e.key, e.value, e.version])).toEqual([
        ['a', 3, a2.version],
        ['b', 2, b.version],
      ]);
    });

    it('compares and sets: creates only when absent, replaces only the version it read', async () => {
      const s = await open();
      const v1 = await s.putIf('owners/web', { host: 'h1' }, null);
      expect(v1).toMatch(/^[1-9]\d*$/);
      expect(await s.putIf('owners/web', { host: 'h2' }, null)).toBeUndefined();
      const v2 = await s.putIf('owners/web', { host: 'h2' }, v1!);
      expect(v2).toBeDefined();
      expect(BigInt(v2!) > BigInt(v1!)).toBe(true);
      // A writer that read v1 lost the race: nothing changes.
      expect(await s.putIf('owners/web', { host: 'h3' }, v1!)).toBeUndefined();
      expect(await s.get('owners/web')).toEqual({ host: 'h2' });
      expect(await s.deleteIf('owners/web', v1!)).toBe(false);
      expect(await s.deleteIf('owners/web', v2!)).toBe(true);
      expect(await s.get('owners/web')).toBeUndefined();
      expect(await s.putIf('owners/web', { host: 'h4' }, null)).toBeDefined();
    });

    it('lets exactly one of many racing writers win a compare-and-set', async () => {
      const s = await open();
      const v = (await s.putIf('race', 0, null))!;
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => s.putIf('race', i + 1, v)));
      expect(results.filter((r) => r !== undefined)).toHaveLength(1);
    });

    it('keeps a spec-sized value whole (a 1,000-host spec is ~1.4 MB) and refuses one over its limit', async () => {
      const s = await open();
      const spec = { text: fleetLikeText(1_500_000), source: 'fleet.yaml' };
      await s.put('spec/current', spec);
      expect(await s.get('spec/current')).toEqual(spec);
      const v = (await s.getVersioned<typeof spec>('spec/current'))!;
      expect(v.value.text).toHaveLength(spec.text.length);
      const next = { ...spec, source: 'next.yaml' };
      expect(await s.putIf('spec/current', next, v.version)).toBeDefined();
      expect((await s.list<typeof spec>('spec/')).map((e) => e.value.source)).toEqual(['next.yaml']);
      // Over the limit: refused naming the key, and the value before stays whole.
      const tooBig = { text: 'x'.repeat(STORE_VALUE_MAX_BYTES) };
      await expect(s.put('spec/current', tooBig)).rejects.toThrow(InvalidRequestError);
      await expect(s.putIf('spec/current', tooBig, null)).rejects.toThrow(/spec\/current/);
      expect(await s.get('spec/current')).toEqual(next);
    });

    it('keeps events in order and returns the newest', async () => {
      const s = await open();
      for (let i = 0; i < 5; i++) await s.appendEvent('apply', `event ${i}`);
      const last = await s.events(2);
      expect(last.map((e) => e.message)).toEqual(['event 3', 'event 4']);
      expect(last[0]!.id).toBeLessThan(last[1]!.id);
    });

    it('keeps the newest audit entries, pruning beyond its bound, and filters by time', async () => {
      const s = await open();
      for (let i = 0; i < 6; i++) await s.appendAudit(`2026-01-01T00:00:0${i}.000Z`, { n: i }, 4);
      const all = await s.auditEntries(undefined, 100);
      expect(all.map((e) => e.record)).toEqual([{ n: 2 }, { n: 3 }, { n: 4 }, { n: 5 }]);
      expect(all[0]!.id).toBeLessThan(all[1]!.id);
      const since = await s.auditEntries('2026-01-01T00:00:04.000Z', 100);
      expect(since.map((e) => e.time)).toEqual(['2026-01-01T00:00:04.000Z', '2026-01-01T00:00:05.000Z']);
      expect((await s.auditEntries(undefined, 1)).map((e) => e.record)).toEqual([{ n: 5 }]);
    });
  });
}
