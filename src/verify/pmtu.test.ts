import { describe, expect, it } from 'vitest';
import { ICMP_OVERHEAD, searchPathMtu } from './pmtu.js';

/** A path that carries MTUs up to `limit`. */
const path = (limit: number) => async (payload: number) => payload + ICMP_OVERHEAD <= limit;

describe('path-MTU search', () => {
  it('needs one probe when the full MTU passes', async () => {
    expect(await searchPathMtu(path(1450), 1450)).toEqual({ measuredMtu: 1450, probed: [1422] });
  });

  it('bisects to the largest passing MTU', async () => {
    for (const limit of [1400, 1422, 1449, 577, 576, 1000]) {
      const s = await searchPathMtu(path(limit), 1450);
      expect(s.measuredMtu, String(limit)).toBe(limit);
      expect(s.probed.length).toBeLessThanOrEqual(2 + Math.ceil(Math.log2(1450 - 576)));
    }
    const jumbo = await searchPathMtu(path(1500), 9000);
    expect(jumbo.measuredMtu).toBe(1500);
    expect(jumbo.probed.slice(0, 2)).toEqual([8972, 548]);
  });

  it('reports nothing when even the minimum fails', async () => {
    expect(await searchPathMtu(async () => false, 1500)).toEqual({ probed: [1472, 548] });
  });

  it('never searches below the minimum unless told to', async () => {
    expect((await searchPathMtu(path(300), 576)).measuredMtu).toBeUndefined();
    expect((await searchPathMtu(path(300), 576, { minMtu: 68 })).measuredMtu).toBe(300);
    expect((await searchPathMtu(path(400), 500, { minMtu: 200 })).measuredMtu).toBe(400);
  });
});
