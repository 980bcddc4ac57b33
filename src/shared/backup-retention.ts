// Retention (issue 12, docs/backup.md "Policies, schedules and objectives"): which snapshots a policy keeps, exactly as
// `restic forget --keep-last/-hourly/-daily/-weekly/-monthly/-yearly` with the same numbers keeps them (restic's
// internal/restic/snapshot_policy.go, as released in restic 0.14, the Debian bookworm package the tests run).
// Pure: shared because the controller (after each backup, `vmlink backup prune`) and an offsite store's agent (after
// each pull) both apply it. Calendar buckets are UTC (restic buckets in the snapshot's own zone: run it with TZ=UTC).
//
// The rule: snapshots newest first; each rule is a bucket with a count; walking the list, a snapshot whose bucket
// value (its hour, day, ISO week, month, year; its position for `last`) differs from the previous kept one's for that
// rule is kept by that rule, which then counts one down; a rule at 0 keeps nothing more. Kept by any rule is kept.
// restic 0.16 and later also keep the oldest snapshot while a rule has counts left; 0.14 (and this module) does not.
import type { RetentionRules, SnapshotId } from './backup.js';

/** One snapshot as retention sees it: its id and the time of its consistent point. */
export interface RetentionInput {
  id: SnapshotId;
  at: Date;
}

/** What retention keeps (newest first, with why: restic's reasons) and removes (newest first). */
export interface RetentionOutcome {
  keep: { id: SnapshotId; reasons: string[] }[];
  remove: SnapshotId[];
}

type Bucketer = (d: Date, position: number) => number;

const byPosition: Bucketer = (_d, position) => position;
const hour: Bucketer = (d) =>
  d.getUTCFullYear() * 1_000_000 + (d.getUTCMonth() + 1) * 10_000 + d.getUTCDate() * 100 + d.getUTCHours();
const day: Bucketer = (d) => d.getUTCFullYear() * 10_000 + (d.getUTCMonth() + 1) * 100 + d.getUTCDate();
const month: Bucketer = (d) => d.getUTCFullYear() * 100 + (d.getUTCMonth() + 1);
const year: Bucketer = (d) => d.getUTCFullYear();
const week: Bucketer = (d) => {
  const { year: y, week: w } = isoWeek(d);
  return y * 100 + w;
};

/** The ISO 8601 week of a UTC time (weeks start on Monday; week 1 holds the year's first Thursday), as Go's ISOWeek. */
export function isoWeek(d: Date): { year: number; week: number } {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const weekday = t.getUTCDay() === 0 ? 7 : t.getUTCDay(); // Monday 1 .. Sunday 7
  t.setUTCDate(t.getUTCDate() + 4 - weekday); // the Thursday of d's week decides its year
  const y = t.getUTCFullYear();
  const week = Math.floor((t.getTime() - Date.UTC(y, 0, 1)) / 86_400_000 / 7) + 1;
  return { year: y, week };
}

/** Rules in restic's order, with restic's reason strings. */
const RULES: { key: keyof RetentionRules; bucket: Bucketer; reason: string }[] = [
  { key: 'last', bucket: byPosition, reason: 'last snapshot' },
  { key: 'hourly', bucket: hour, reason: 'hourly snapshot' },
  { key: 'daily', bucket: day, reason: 'daily snapshot' },
  { key: 'weekly', bucket: week, reason: 'weekly snapshot' },
  { key: 'monthly', bucket: month, reason: 'monthly snapshot' },
  { key: 'yearly', bucket: year, reason: 'yearly snapshot' },
];

/**
 * Applies `rules` to one VM's snapshots in one store (restic's group: apply it per VM). Snapshots are ordered newest
 * first (ties: the greater id first, so the outcome never depends on the input's order). Rules that keep nothing at
 * all (every count 0 or absent) keep everything, as restic does with an empty policy ("policy is empty"); the spec
 * refuses such rules, so this only guards a caller.
 */
export function applyRetention(
  snapshots: readonly RetentionInput[],
  rules: RetentionRules,
): RetentionOutcome {
  const list = [...snapshots].sort(
    (a, b) => b.at.getTime() - a.at.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0),
  );
  const counts = RULES.map((r) => rules[r.key] ?? 0);
  if (counts.every((n) => n <= 0)) {
    return { keep: list.map((s) => ({ id: s.id, reasons: ['policy is empty'] })), remove: [] };
  }
  const last: (number | undefined)[] = RULES.map(() => undefined);
  const keep: RetentionOutcome['keep'] = [];
  const remove: SnapshotId[] = [];
  list.forEach((snap, position) => {
    const reasons: string[] = [];
    RULES.forEach((rule, i) => {
      if ((counts[i] as number) <= 0) return;
      const value = rule.bucket(snap.at, position);
      if (value !== last[i]) {
        last[i] = value;
        counts[i] = (counts[i] as number) - 1;
        reasons.push(rule.reason);
      }
    });
    if (reasons.length > 0) keep.push({ id: snap.id, reasons });
    else remove.push(snap.id);
  });
  return { keep, remove };
}

/** restic's `forget` flags for these rules (`--keep-daily 7` ...), for messages and the comparison tests. */
export function resticForgetArgs(rules: RetentionRules): string[] {
  return RULES.flatMap((r) => {
    const n = rules[r.key];
    return n !== undefined && n > 0 ? [`--keep-${r.key}`, String(n)] : [];
  });
}

/**
 * Applies `rules` to a store's snapshots of any number of VMs, each VM on its own (restic's grouping by host): what a
 * store-wide prune (the controller per policy, an offsite agent after a pull) needs. Outcomes keep their VM's order,
 * VMs sorted by name.
 */
export function applyRetentionPerVm(
  snapshots: readonly RetentionInput[],
  rules: RetentionRules,
): RetentionOutcome {
  const byVm = new Map<string, RetentionInput[]>();
  for (const s of snapshots) {
    const vm = s.id.slice(0, s.id.indexOf('@'));
    const list = byVm.get(vm);
    if (list) list.push(s);
    else byVm.set(vm, [s]);
  }
  const out: RetentionOutcome = { keep: [], remove: [] };
  for (const vm of [...byVm.keys()].sort()) {
    const r = applyRetention(byVm.get(vm) as RetentionInput[], rules);
    out.keep.push(...r.keep);
    out.remove.push(...r.remove);
  }
  return out;
}
