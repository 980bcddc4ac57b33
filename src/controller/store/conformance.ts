import { afterEach, describe, expect, it } from 'vitest';
import type { Store } from './types.js';

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
