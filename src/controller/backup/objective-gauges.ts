// Backup objectives as metric series (issue 12: "a drift is an event and, once alerting exists, an alert"). The
// backup manager hands over each evaluation; the metrics collector adds these series to every snapshot, so `alerts:`
// rules see them like an agent's (docs/backup.md, "Alerts on objectives"):
//   vmlink_backup_objective_ok{policy, vm, objective}   1 met, 0 in drift; absent while not declared or unknown
//   vmlink_backup_newest_age_seconds{policy, vm}        age of the newest good snapshot, now (absent: none yet)
import type { ObjectiveStatus } from '../../shared/backup.js';
import type { Series } from '../../shared/metrics.js';

/** The last evaluation of every (policy, VM)'s objectives, as series. */
export class ObjectiveGauges {
  private last: { at: number; objectives: readonly ObjectiveStatus[] } | undefined;

  /** The manager's evaluation at `at` replaces the last one (an empty list: no policy any more, or it stopped). */
  set(objectives: readonly ObjectiveStatus[], at: Date): void {
    this.last = { at: at.getTime(), objectives };
  }

  /** The series at `now` (epoch ms): the newest snapshot's age counts the time since the evaluation. */
  series(now: number): Series[] {
    if (!this.last) return [];
    const since = Math.max(0, (now - this.last.at) / 1000);
    const out: Series[] = [];
    for (const o of this.last.objectives) {
      for (const objective of ['rpo', 'rto', 'rule'] as const) {
        const state = o[objective].state;
        if (state === 'unknown') continue;
        out.push({
          name: 'vmlink_backup_objective_ok',
          labels: { policy: o.policy, vm: o.vm, objective },
          value: state === 'ok' ? 1 : 0,
        });
      }
      const age = o.rpo.newestAgeMinutes;
      if (age !== undefined)
        out.push({
          name: 'vmlink_backup_newest_age_seconds',
          labels: { policy: o.policy, vm: o.vm },
          value: age * 60 + since,
        });
    }
    return out;
  }
}
