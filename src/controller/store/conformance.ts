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
  });
}
