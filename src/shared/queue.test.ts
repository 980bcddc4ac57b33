import { describe, expect, it } from 'vitest';
import { KeyedQueue, Limiter, mapLimited, SerialQueue } from './queue.js';
import { sleep } from './time.js';

describe('SerialQueue', () => {
  it('runs one at a time in call order, and a failure does not stop the next', async () => {
    const q = new SerialQueue();
    const log: string[] = [];
    const job =
      (name: string, ms: number, fail = false) =>
      async () => {
        log.push(`start ${name}`);
        await sleep(ms);
        log.push(`end ${name}`);
        if (fail) throw new Error(name);
        return name;
      };
    const a = q.run(job('a', 30));
    const b = q.run(job('b', 5, true));
    const c = q.run(job('c', 1));
    expect(await a).toBe('a');
    await expect(b).rejects.toThrow('b');
    expect(await c).toBe('c');
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });
});

describe('KeyedQueue', () => {
  it('serialises per key, runs keys concurrently and forgets idle keys', async () => {
    const q = new KeyedQueue();
    const log: string[] = [];
    const job = (name: string, ms: number) => async () => {
      log.push(`start ${name}`);
      await sleep(ms);
      log.push(`end ${name}`);
    };
    await Promise.all([q.run('x', job('x1', 30)), q.run('x', job('x2', 1)), q.run('y', job('y1', 1))]);
    expect(log.indexOf('end x1')).toBeLessThan(log.indexOf('start x2'));
    expect(log.indexOf('end y1')).toBeLessThan(log.indexOf('end x1'));
    await sleep(0);
    expect(q.size).toBe(0);
  });

  it('mapLimited: results in order, at most n at once, no new call after a failure, which rejects', async () => {
    let running = 0;
    let most = 0;
    const out = await mapLimited([30, 1, 20, 5, 1], 2, async (ms, i) => {
      most = Math.max(most, ++running);
      await sleep(ms);
      running--;
      return i * 10;
    });
    expect(out).toEqual([0, 10, 20, 30, 40]);
    expect(most).toBe(2);
    const started: number[] = [];
    await expect(
      mapLimited([0, 1, 2, 3, 4], 1, async (i) => {
        started.push(i);
        if (i === 1) throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(started).toEqual([0, 1]);
  });
});

describe('Limiter', () => {
  it('runs at most n at once, the rest in call order, and a failure frees its slot', async () => {
    const l = new Limiter(2);
    let now = 0;
    let peak = 0;
    const order: number[] = [];
    const gates: Array<() => void> = [];
    const job = (i: number, fail = false) =>
      l.run(async () => {
        order.push(i);
        now++;
        peak = Math.max(peak, now);
        await new Promise<void>((r) => gates.push(r));
        now--;
        if (fail) throw new Error(`job ${i}`);
        return i;
      });
    const all = [job(0, true), job(1), job(2), job(3), job(4)].map((p) => p.catch((e: Error) => e.message));
    await new Promise((r) => setImmediate(r));
    expect(l.load).toEqual({ running: 2, waiting: 3 });
    while (gates.length || l.load.running) {
      gates.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    expect(await Promise.all(all)).toEqual(['job 0', 1, 2, 3, 4]);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(peak).toBe(2);
    expect(l.load).toEqual({ running: 0, waiting: 0 });
    expect(() => new Limiter(0)).toThrow(RangeError);
  });
});
