import { describe, expect, it } from 'vitest';
import { type Job, next, order, simulate } from './schedule.js';

const g = (name: string, seconds: number, more: Partial<Job> = {}): Job => ({
  name,
  cls: 'guest',
  seconds,
  ...more,
});
const l = (name: string, seconds: number): Job => ({ name, cls: 'light', seconds });
const limits = { unit: 1, light: 1, guest: 2 };

describe('integration schedule', () => {
  it('orders longest first, ties by name', () => {
    expect(order([g('b', 10), l('a', 10), g('c', 30)]).map((j) => j.name)).toEqual(['c', 'a', 'b']);
  });

  it('starts the static checks beside the first guest file, then the unit tests after them', () => {
    const lim = { unit: 1, light: 2, guest: 1 };
    const checks: Job = { name: 'checks', cls: 'unit', seconds: 45, first: true };
    const unit: Job = { name: 'unit', cls: 'unit', seconds: 300 };
    const q = order([unit, l('ovs', 240), g('sg', 140), checks]);
    expect(q.map((j) => j.name)).toEqual(['checks', 'unit', 'ovs', 'sg']);
    const { plan } = simulate([unit, l('ovs', 240), g('sg', 140), checks], 2, lim);
    expect(plan.map((p) => [p.job.name, p.start])).toEqual([
      ['sg', 0],
      ['checks', 0],
      ['unit', 45],
      ['ovs', 140],
    ]);
  });

  it('keeps each class under its limit', () => {
    const q = order([g('g1', 50), g('g2', 40), g('g3', 30), l('l1', 20), l('l2', 10)]);
    expect(next(q, [], limits)?.name).toBe('g1');
    expect(next(q.slice(1), [q[0]!], limits)?.name).toBe('g2');
    // Two guests run: the next guest waits, a light file starts.
    expect(next(q.slice(2), [q[0]!, q[1]!], limits)?.name).toBe('l1');
    expect(next([l('l2', 10)], [l('l1', 20)], limits)).toBeUndefined();
  });

  it('starts a guest file before longer light files and unit tests while a guest slot is free', () => {
    const unit: Job = { name: 'unit', cls: 'unit', seconds: 300 };
    const q = order([unit, l('ovs', 240), g('sg', 140), g('small', 20)]);
    expect(next(q, [], { unit: 1, light: 2, guest: 1 })?.name).toBe('sg');
    // The guest slot taken: the longest of the rest.
    expect(
      next(
        q.filter((j) => j.name !== 'sg'),
        [q.find((j) => j.name === 'sg')!],
        { unit: 1, light: 2, guest: 1 },
      )?.name,
    ).toBe('unit');
  });

  it('never overlaps two files of one group; skips to a file of another', () => {
    const a = g('a', 50, { groups: ['storage'] });
    const b = g('b', 40, { groups: ['storage'] });
    expect(next([b, g('c', 10)], [a], limits)?.name).toBe('c');
    expect(next([b], [a], limits)).toBeUndefined();
  });

  it('runs an exclusive file alone, and starts no guest file past it while it waits', () => {
    const x = g('x', 80, { exclusive: true });
    expect(next([x, g('c', 10), l('l', 5)], [g('a', 50)], limits)?.name).toBe('l');
    expect(next([x, g('c', 10)], [g('a', 50)], limits)).toBeUndefined();
    expect(next([x], [l('l', 5)], limits)?.name).toBe('x');
    expect(next([g('c', 10)], [x], limits)).toBeUndefined();
    // Behind a file that waits for its group, x holds nothing back: x is not at the head yet.
    const big = g('big', 90, { groups: ['big'] });
    expect(next([big, x, g('c', 10)], [g('a', 50, { groups: ['big'] })], limits)?.name).toBe('c');
  });

  it('keeps an exclusive file off the unit tests, without holding other guest files back while they run', () => {
    const x = g('x', 80, { exclusive: true });
    const unit: Job = { name: 'unit', cls: 'unit', seconds: 300 };
    expect(next([x, g('c', 10)], [unit], limits)?.name).toBe('c');
    expect(next([x], [unit], limits)).toBeUndefined();
    expect(next([unit, x], [], limits)?.name).toBe('unit');
    expect(next([unit], [x], limits)).toBeUndefined();
  });

  it('simulates the plan: every job once, the total no shorter than the longest class on its slots', () => {
    const jobs = [
      g('g1', 100),
      g('g2', 60),
      g('g3', 40),
      g('x', 30, { exclusive: true }),
      l('l1', 70),
      l('l2', 20),
    ];
    const { plan, total } = simulate(jobs, 3, limits);
    expect(plan.map((p) => p.job.name).sort()).toEqual(jobs.map((j) => j.name).sort());
    // x ran alone among the guest files.
    const x = plan.find((p) => p.job.name === 'x')!;
    const overlapping = plan.filter(
      (p) => p.job.cls === 'guest' && p !== x && p.start < x.end && p.end > x.start,
    );
    expect(overlapping).toEqual([]);
    expect(total).toBeGreaterThanOrEqual(90);
    expect(total).toBeLessThan(100 + 60 + 40 + 30);
    // One worker only: everything in a row.
    expect(simulate(jobs, 1, limits).total).toBe(320);
    // With the unit tests: x starts only once they are done.
    const withUnit = simulate([...jobs, { name: 'unit', cls: 'unit', seconds: 150 }], 3, limits).plan;
    expect(withUnit.find((p) => p.job.name === 'x')!.start).toBeGreaterThanOrEqual(150);
  });
});
