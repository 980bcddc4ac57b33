import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../shared/errors.js';
import { BackupScheduleSchema } from '../../spec/schema-backup.js';
import { describeSchedule, isDue, nextDue, parseSchedule } from './schedule.js';

const at = (s: string) => new Date(s);
const MIN = 60_000;

/** A manager on a fake clock: ticks every `tickMs` from `from` to `to`, runs when due, unless the controller is down. */
function simulate(
  schedule: string,
  from: Date,
  to: Date,
  tickMs: number,
  down: (t: number) => boolean = () => false,
) {
  const runs: Date[] = [];
  let last: Date | undefined;
  for (let t = from.getTime(); t < to.getTime(); t += tickMs) {
    if (down(t)) continue;
    const now = new Date(t);
    if (isDue(schedule, last, now)) {
      runs.push(now);
      last = now;
    }
  }
  return runs;
}

describe('parseSchedule', () => {
  it('reads every N with m, h, d', () => {
    expect(parseSchedule('every 10m')).toEqual({ kind: 'every', intervalMs: 10 * MIN });
    expect(parseSchedule('every 2h')).toEqual({ kind: 'every', intervalMs: 120 * MIN });
    expect(parseSchedule('every 1d')).toEqual({ kind: 'every', intervalMs: 1440 * MIN });
  });
  it('reads windows, crossing midnight too', () => {
    expect(parseSchedule('02:00-04:00')).toEqual({ kind: 'window', startMinute: 120, lengthMinutes: 120 });
    expect(parseSchedule('23:30-00:15')).toEqual({ kind: 'window', startMinute: 1410, lengthMinutes: 45 });
  });
  it('refuses what the spec refuses, naming the schedule', () => {
    for (const bad of ['every 0m', 'every 5s', '02:00-02:00', '24:00-01:00', 'nightly', 'every 10000m']) {
      expect(() => parseSchedule(bad)).toThrow(InvalidRequestError);
      expect(() => parseSchedule(bad)).toThrow(`schedule "${bad}"`);
      expect(BackupScheduleSchema.safeParse(bad).success).toBe(false);
    }
  });
  it('accepts exactly what the spec accepts', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.constantFrom('every 1m', '00:00-23:59', '9:00-10:00', 'every 01m')),
        (s) => {
          let ok = true;
          try {
            parseSchedule(s);
          } catch {
            ok = false;
          }
          expect(ok).toBe(BackupScheduleSchema.safeParse(s).success);
        },
      ),
    );
  });
  it('describes', () => {
    expect(describeSchedule('every 10m')).toBe('every 10m');
    expect(describeSchedule('22:00-02:00')).toBe('daily between 22:00 and 02:00 UTC');
  });
});

describe('every N', () => {
  it('a first run is due at once', () => {
    const now = at('2026-12-01T10:00:00Z');
    expect(isDue('every 10m', undefined, now)).toBe(true);
    expect(nextDue('every 10m', undefined, now)).toEqual(now);
  });
  it('is due N after the last run, not before', () => {
    const last = at('2026-12-01T10:00:00Z');
    expect(nextDue('every 10m', last, at('2026-12-01T10:03:00Z'))).toEqual(at('2026-12-01T10:10:00Z'));
    expect(isDue('every 10m', last, at('2026-12-01T10:09:59.999Z'))).toBe(false);
    expect(isDue('every 10m', last, at('2026-12-01T10:10:00Z'))).toBe(true);
  });
  it('a run missed while the controller was down is due at once after, and only once', () => {
    const last = at('2026-12-01T10:00:00Z');
    const back = at('2026-12-01T13:00:00Z');
    expect(nextDue('every 10m', last, back)).toEqual(at('2026-12-01T10:10:00Z'));
    expect(isDue('every 10m', last, back)).toBe(true);
    expect(isDue('every 10m', back, new Date(back.getTime() + 30_000))).toBe(false);
  });
  it('runs every N on a ticking clock, never closer than N', () => {
    const runs = simulate('every 10m', at('2026-12-01T00:00:00Z'), at('2026-12-01T06:00:00Z'), 30_000);
    expect(runs).toHaveLength(36);
    for (let i = 1; i < runs.length; i++) {
      expect((runs[i] as Date).getTime() - (runs[i - 1] as Date).getTime()).toBe(10 * MIN);
    }
  });
});

describe('daily windows (UTC)', () => {
  it('is due at the window start, once', () => {
    const start = at('2026-12-01T02:00:00Z');
    expect(isDue('02:00-04:00', undefined, at('2026-12-01T01:59:59Z'))).toBe(false);
    expect(nextDue('02:00-04:00', undefined, at('2026-12-01T01:00:00Z'))).toEqual(start);
    expect(isDue('02:00-04:00', undefined, start)).toBe(true);
    expect(isDue('02:00-04:00', start, at('2026-12-01T02:00:30Z'))).toBe(false);
    expect(nextDue('02:00-04:00', start, at('2026-12-01T02:00:30Z'))).toEqual(at('2026-12-02T02:00:00Z'));
  });
  it('a window missed at its start is caught up inside it, never after it', () => {
    const lastYesterday = at('2026-11-30T02:00:00Z');
    expect(isDue('02:00-04:00', lastYesterday, at('2026-12-01T03:59:00Z'))).toBe(true);
    expect(nextDue('02:00-04:00', lastYesterday, at('2026-12-01T03:59:00Z'))).toEqual(
      at('2026-12-01T02:00:00Z'),
    );
    expect(isDue('02:00-04:00', lastYesterday, at('2026-12-01T04:00:00Z'))).toBe(false);
    expect(nextDue('02:00-04:00', lastYesterday, at('2026-12-01T05:00:00Z'))).toEqual(
      at('2026-12-02T02:00:00Z'),
    );
  });
  it('a run recorded earlier in the same occurrence (before a controller restart) is not repeated', () => {
    expect(isDue('02:00-04:00', at('2026-12-01T02:10:00Z'), at('2026-12-01T03:00:00Z'))).toBe(false);
  });
  it('a window crossing midnight belongs to the day it opens', () => {
    const w = '23:00-01:00';
    expect(isDue(w, at('2026-11-30T23:00:00Z'), at('2026-12-01T00:30:00Z'))).toBe(false);
    expect(isDue(w, at('2026-11-29T23:00:00Z'), at('2026-12-01T00:30:00Z'))).toBe(true);
    expect(nextDue(w, at('2026-11-29T23:00:00Z'), at('2026-12-01T00:30:00Z'))).toEqual(
      at('2026-11-30T23:00:00Z'),
    );
    expect(isDue(w, at('2026-11-30T23:00:00Z'), at('2026-12-01T01:00:00Z'))).toBe(false);
    expect(nextDue(w, at('2026-11-30T23:00:00Z'), at('2026-12-01T01:00:00Z'))).toEqual(
      at('2026-12-01T23:00:00Z'),
    );
    expect(isDue(w, at('2026-11-30T23:00:00Z'), at('2026-12-01T23:00:00Z'))).toBe(true);
  });
  it('runs once per occurrence on a ticking clock, inside the window', () => {
    for (const [w, inside] of [
      ['02:00-04:00', (m: number) => m >= 120 && m < 240],
      ['23:30-00:15', (m: number) => m >= 1410 || m < 15],
      ['00:00-23:59', (m: number) => m < 1439],
    ] as const) {
      const runs = simulate(w, at('2026-12-01T00:00:00Z'), at('2026-12-11T00:00:00Z'), 30_000);
      // 23:30-00:15 is open at the first tick (the occurrence opened 2026-11-30): 11 occurrences are seen.
      expect(runs).toHaveLength(w === '23:30-00:15' ? 11 : 10);
      for (const r of runs) expect(inside(r.getUTCHours() * 60 + r.getUTCMinutes())).toBe(true);
      const s = parseSchedule(w);
      const startMinute = s.kind === 'window' ? s.startMinute : 0;
      const days = new Set(
        runs.map((r) => new Date(r.getTime() - startMinute * MIN).toISOString().slice(0, 10)),
      );
      expect(days.size).toBe(runs.length);
    }
  });
  it('catches up inside the window after downtime at its start; skips an occurrence the controller missed wholly', () => {
    const from = at('2026-12-01T00:00:00Z').getTime();
    // down 01:00-03:10 on day 1 (window 02:00-04:00 caught up at 03:10); down all of day 3.
    const down = (t: number) =>
      (t >= from + 60 * MIN && t < from + 190 * MIN) ||
      (t >= from + 2 * 1440 * MIN && t < from + 3 * 1440 * MIN);
    const runs = simulate(
      '02:00-04:00',
      at('2026-12-01T00:00:00Z'),
      at('2026-12-05T00:00:00Z'),
      30_000,
      down,
    );
    expect(runs.map((r) => r.toISOString())).toEqual([
      '2026-12-01T03:10:00.000Z',
      '2026-12-02T02:00:00.000Z',
      '2026-12-04T02:00:00.000Z',
    ]);
  });
  it('property: any window, any ticks and downtime: at most one run per occurrence, each inside it', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1439 }),
        fc.integer({ min: 1, max: 1439 }),
        fc.integer({ min: 1, max: 45 * 60 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 4 * 1440 }), fc.integer({ min: 1, max: 600 })), {
          maxLength: 4,
        }),
        (startMinute, length, tickSeconds, downs) => {
          const hhmm = (m: number) =>
            `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
          const w = `${hhmm(startMinute)}-${hhmm((startMinute + length) % 1440)}`;
          const from = at('2026-12-01T00:00:00Z').getTime();
          const down = (t: number) => downs.some(([s, l]) => t >= from + s * MIN && t < from + (s + l) * MIN);
          const runs = simulate(w, new Date(from), new Date(from + 5 * 1440 * MIN), tickSeconds * 1000, down);
          const occurrences = runs.map((r) => {
            const sinceStart = (r.getTime() - from - startMinute * MIN + 2 * 1440 * MIN) % (1440 * MIN);
            expect(sinceStart).toBeLessThan(length * MIN);
            return Math.floor((r.getTime() - from - startMinute * MIN + 1440 * MIN) / (1440 * MIN));
          });
          expect(new Set(occurrences).size).toBe(occurrences.length);
        },
      ),
      { numRuns: 60 },
    );
  });
});
