import { describe, expect, it } from 'vitest';
import { SeriesHistory } from './history.js';

const s = (vm: string, value: number) => ({
  name: 'vmlink_vm_memory_rss_bytes',
  labels: { host: 'h', vm },
  value,
});

describe('series history', () => {
  it('keeps points within the window, at most pointsMax, and at most seriesMax series', () => {
    const h = new SeriesHistory({ retentionMs: 100, pointsMax: 3, seriesMax: 2 });
    h.add(0, [s('a', 1), s('b', 1), s('c', 1)]);
    expect(h.size).toBe(2);
    expect(h.get('vmlink_vm_memory_rss_bytes', { host: 'h', vm: 'c' }, 0)).toEqual([]);
    for (let t = 10; t <= 50; t += 10) h.add(t, [s('a', t)]);
    expect(h.get('vmlink_vm_memory_rss_bytes', { vm: 'a', host: 'h' }, 0).map((p) => p.at)).toEqual([
      30, 40, 50,
    ]);
    expect(h.get('vmlink_vm_memory_rss_bytes', { vm: 'a', host: 'h' }, 45)).toEqual([{ at: 50, value: 50 }]);
    // b was last seen at 0: once that is out of the window, the whole series goes (and frees its place).
    h.add(101, [s('a', 1)]);
    expect(h.get('vmlink_vm_memory_rss_bytes', { host: 'h', vm: 'b' }, 0)).toEqual([]);
    expect(h.size).toBe(1);
    h.add(102, [s('c', 7)]);
    expect(h.get('vmlink_vm_memory_rss_bytes', { host: 'h', vm: 'c' }, 0)).toEqual([{ at: 102, value: 7 }]);
  });
});
