import { describe, expect, it } from 'vitest';
import type { ObjectiveStatus } from '../../shared/backup.js';
import { AlertRuleSchema } from '../../spec/schema-observe.js';
import { AlertEngine } from '../alerts/engine.js';
import { SqliteStore } from '../store/sqlite.js';
import { ObjectiveGauges } from './objective-gauges.js';

const status = (over: Partial<ObjectiveStatus> = {}): ObjectiveStatus => ({
  policy: 'nightly',
  vm: 'web1',
  rpo: { state: 'drift', objectiveMinutes: 15, newestAgeMinutes: 16 },
  rto: { state: 'unknown', objectiveMinutes: 30 },
  rule: { state: 'ok', rule: '3-2-1', copies: 3, machines: 3, offsite: 1, stores: ['site', 'vault'] },
  problems: ['RPO: the newest good snapshot is 16 min old, over 15 min'],
  ...over,
});

describe('ObjectiveGauges', () => {
  it('publishes met objectives as 1, drifts as 0, leaves unknown ones out, and ages the newest snapshot', () => {
    const g = new ObjectiveGauges();
    expect(g.series(0)).toEqual([]);
    const at = new Date('2026-12-01T02:16:00Z');
    g.set([status()], at);
    expect(g.series(at.getTime() + 30_000)).toEqual([
      {
        name: 'vmlink_backup_objective_ok',
        labels: { policy: 'nightly', vm: 'web1', objective: 'rpo' },
        value: 0,
      },
      {
        name: 'vmlink_backup_objective_ok',
        labels: { policy: 'nightly', vm: 'web1', objective: 'rule' },
        value: 1,
      },
      {
        name: 'vmlink_backup_newest_age_seconds',
        labels: { policy: 'nightly', vm: 'web1' },
        value: 16 * 60 + 30,
      },
    ]);
    // No snapshot yet: no age; a policy dropped or a manager stopped: nothing.
    g.set([status({ rpo: { state: 'drift', objectiveMinutes: 15 } })], at);
    expect(g.series(at.getTime()).map((s) => s.name)).not.toContain('vmlink_backup_newest_age_seconds');
    g.set([], at);
    expect(g.series(at.getTime())).toEqual([]);
  });

  it('lets an alert rule on vmlink_backup_objective_ok fire for the drifting objective only', async () => {
    const g = new ObjectiveGauges();
    const at = new Date('2026-12-01T02:16:00Z');
    g.set([status()], at);
    const store = new SqliteStore(':memory:');
    const engine = new AlertEngine({
      store,
      rules: async () => [
        AlertRuleSchema.parse({
          name: 'backup-objective',
          expr: 'vmlink_backup_objective_ok',
          op: '<',
          threshold: 1,
          severity: 'critical',
          summary: 'backup {{objective}} of {{vm}} under {{policy}} in drift',
        }),
      ],
    });
    await engine.evaluate({ at: at.getTime(), series: g.series(at.getTime()) });
    expect(engine.counts()).toEqual([
      { rule: 'backup-objective', state: 'firing', severity: 'critical', count: 1 },
    ]);
    await store.close();
  });
});
