import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type ResticOutcome,
  type RetentionCase,
  randomCase,
  resticAvailable,
  resticForget,
} from '../../test/helpers/restic-forget.js';
import { type RetentionRules, type SnapshotId, snapshotId } from './backup.js';
import { applyRetention, applyRetentionPerVm, isoWeek, resticForgetArgs } from './backup-retention.js';

const snaps = (times: string[]) =>
  times.map((t) => ({ id: snapshotId('web1', new Date(t)), at: new Date(t) }));
const stamp = (t: string) => snapshotId('web1', new Date(t));

/** Our outcome in restic's terms (times), to compare with what restic answered. */
function ours(c: RetentionCase): ResticOutcome {
  const out = applyRetention(snaps(c.times), c.rules);
  const time = (id: SnapshotId) => {
    const s = id.split('@')[1] as string;
    return `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13, 15)}Z`;
  };
  return {
    keep: out.keep.map((k) => ({ at: time(k.id), reasons: k.reasons })),
    remove: out.remove.map(time),
  };
}

describe('isoWeek', () => {
  it('matches ISO 8601 (Go time.ISOWeek) at year edges', () => {
    const cases: [string, number, number][] = [
      ['2020-12-31T23:59:59Z', 2020, 53],
      ['2021-01-03T12:00:00Z', 2020, 53],
      ['2021-01-04T00:00:00Z', 2021, 1],
      ['2024-12-30T00:00:00Z', 2025, 1],
      ['2026-12-28T00:00:00Z', 2026, 53],
      ['2027-01-03T23:59:59Z', 2026, 53],
      ['2027-01-04T00:00:00Z', 2027, 1],
      ['2026-06-15T10:00:00Z', 2026, 25],
    ];
    for (const [t, year, week] of cases) expect(isoWeek(new Date(t))).toEqual({ year, week });
  });
});

describe('applyRetention', () => {
  it('keeps the newest snapshot of each of the last n days, with restic reasons', () => {
    const out = applyRetention(
      snaps(['2026-12-01T10:00:00Z', '2026-12-01T11:30:00Z', '2026-12-02T09:00:00Z', '2026-11-28T09:00:00Z']),
      { daily: 2 },
    );
    expect(out.keep).toEqual([
      { id: stamp('2026-12-02T09:00:00Z'), reasons: ['daily snapshot'] },
      { id: stamp('2026-12-01T11:30:00Z'), reasons: ['daily snapshot'] },
    ]);
    expect(out.remove).toEqual([stamp('2026-12-01T10:00:00Z'), stamp('2026-11-28T09:00:00Z')]);
  });
  it('counts buckets that have a snapshot, not calendar buckets (a gap does not use a count)', () => {
    const out = applyRetention(
      snaps(['2026-12-10T01:00:00Z', '2026-12-01T01:00:00Z', '2026-11-01T01:00:00Z']),
      {
        daily: 3,
      },
    );
    expect(out.remove).toEqual([]);
  });
  it('a snapshot kept by several rules lists every reason, in restic order', () => {
    const out = applyRetention(snaps(['2026-12-01T10:00:00Z']), { yearly: 1, last: 1, weekly: 1, hourly: 1 });
    expect(out.keep[0]?.reasons).toEqual([
      'last snapshot',
      'hourly snapshot',
      'weekly snapshot',
      'yearly snapshot',
    ]);
  });
  it('ISO weeks: Sunday and the next Monday are different weeks; Dec 31 and Jan 3 can be one', () => {
    const w = applyRetention(snaps(['2026-12-07T00:00:00Z', '2026-12-06T23:59:59Z']), { weekly: 2 });
    expect(w.remove).toEqual([]);
    const y = applyRetention(snaps(['2021-01-03T10:00:00Z', '2020-12-31T10:00:00Z']), { weekly: 2 });
    expect(y.keep.map((k) => k.id)).toEqual([stamp('2021-01-03T10:00:00Z')]);
  });
  it('rules all at 0 keep everything (restic: "policy is empty")', () => {
    const out = applyRetention(snaps(['2026-12-01T10:00:00Z', '2026-12-02T10:00:00Z']), {
      daily: 0,
    } as RetentionRules);
    expect(out.keep.map((k) => k.reasons)).toEqual([['policy is empty'], ['policy is empty']]);
  });
  it('an empty list keeps and removes nothing', () => {
    expect(applyRetention([], { last: 3 })).toEqual({ keep: [], remove: [] });
  });
  it('per VM: each VM keeps its own last n (restic groups by host)', () => {
    const at = (t: string) => new Date(t);
    const list = [
      { id: snapshotId('web1', at('2026-12-01T10:00:00Z')), at: at('2026-12-01T10:00:00Z') },
      { id: snapshotId('db', at('2026-12-01T09:00:00Z')), at: at('2026-12-01T09:00:00Z') },
      { id: snapshotId('web1', at('2026-12-01T08:00:00Z')), at: at('2026-12-01T08:00:00Z') },
      { id: snapshotId('db', at('2026-12-01T07:00:00Z')), at: at('2026-12-01T07:00:00Z') },
    ];
    const out = applyRetentionPerVm(list, { last: 1 });
    expect(out.keep.map((k) => k.id)).toEqual(['db@20261201T090000Z', 'web1@20261201T100000Z']);
    expect(out.remove).toEqual(['db@20261201T070000Z', 'web1@20261201T080000Z']);
    expect(applyRetention(list, { last: 1 }).keep).toHaveLength(1);
  });
  it('restic flags', () => {
    expect(resticForgetArgs({ last: 3, hourly: 0, daily: 7, yearly: 1 })).toEqual([
      '--keep-last',
      '3',
      '--keep-daily',
      '7',
      '--keep-yearly',
      '1',
    ]);
  });
  it('property: a partition, newest first, the `last` newest kept, independent of input order', () => {
    const rand = () => Math.random();
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 0, max: 1_000_000 }), (size, seed) => {
        const c = randomCase(mulberry(seed), 'p', size);
        const list = snaps(c.times);
        const a = applyRetention(list, c.rules);
        const b = applyRetention(
          [...list].sort(() => rand() - 0.5),
          c.rules,
        );
        expect(b).toEqual(a);
        const all = [...a.keep.map((k) => k.id), ...a.remove];
        expect(new Set(all).size).toBe(list.length);
        const newestFirst = [...list].sort((x, y) => y.at.getTime() - x.at.getTime()).map((s) => s.id);
        expect(a.keep.map((k) => k.id)).toEqual(newestFirst.filter((id) => a.keep.some((k) => k.id === id)));
        const lastN = c.rules.last ?? 0;
        for (const id of newestFirst.slice(0, lastN)) expect(a.keep.some((k) => k.id === id)).toBe(true);
        if (a.keep.length > 0) expect(a.keep[0]?.id).toBe(newestFirst[0]);
      }),
      { numRuns: 200 },
    );
  });
});

function mulberry(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const hasRestic = await resticAvailable();

describe('applyRetention against restic forget', () => {
  const golden = JSON.parse(
    readFileSync(new URL('./__golden__/backup-retention.json', import.meta.url), 'utf8'),
  ) as { restic: string; cases: (RetentionCase & { restic: ResticOutcome })[] };

  it(`keeps and removes what ${golden.restic.split(' compiled')[0]} did (${golden.cases.length} recorded cases)`, () => {
    expect(golden.cases.length).toBeGreaterThanOrEqual(20);
    for (const c of golden.cases) expect({ name: c.name, ...ours(c) }).toEqual({ name: c.name, ...c.restic });
  });

  it.skipIf(!hasRestic)(
    'keeps and removes what the installed restic does, on fresh random cases',
    async () => {
      const cases = fc.sample(
        fc.integer({ min: 0, max: 2 ** 31 }).map((seed) => randomCase(mulberry(seed), `live-${seed}`, 7)),
        2,
      );
      const restic = await resticForget(cases);
      cases.forEach((c, i) => {
        expect({ name: c.name, rules: c.rules, ...ours(c) }).toEqual({
          name: c.name,
          rules: c.rules,
          ...restic[i],
        });
      });
    },
    180_000,
  );
});
