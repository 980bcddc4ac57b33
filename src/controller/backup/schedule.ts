// When a backup policy's schedule (or its restore test's) is due (issue 12, docs/backup.md "Policies, schedules and
// objectives"). Pure: the manager passes the last run it persisted (`backup/schedules/<policy>`) and its clock, so a
// controller restart neither loses a due run nor repeats one.
//
// - `every N(m|h|d)`: due N after the last run; a first run (none recorded) is due at once.
// - `HH:MM-HH:MM` (UTC, may cross midnight): one run per occurrence of the window, due at its start, or later inside
//   it when no run was recorded in it yet (the controller was down at the start); never outside it, never twice in
//   one occurrence. An occurrence that passed wholly while the controller was down is skipped, not run late.
import { parseSchedule, type Schedule } from '../../spec/schema-backup.js';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

export { parseSchedule, type Schedule };

/** The window occurrence (start, end in ms) holding `t`, if any. */
function occurrenceAt(
  s: Extract<Schedule, { kind: 'window' }>,
  t: number,
): { start: number; end: number } | undefined {
  const midnight = Math.floor(t / DAY) * DAY;
  for (const start of [midnight + s.startMinute * MINUTE, midnight - DAY + s.startMinute * MINUTE]) {
    const end = start + s.lengthMinutes * MINUTE;
    if (start <= t && t < end) return { start, end };
  }
  return undefined;
}

/** The first window start strictly after `t`. */
function nextStartAfter(s: Extract<Schedule, { kind: 'window' }>, t: number): number {
  const today = Math.floor(t / DAY) * DAY + s.startMinute * MINUTE;
  return today > t ? today : today + DAY;
}

/**
 * When the schedule is next due: at or before `now` when a run is due now (a missed `every` run, or an open window
 * without a run in it: then the window's start), else the future time it becomes due.
 */
export function nextDue(schedule: string, lastRunAt: Date | undefined, now: Date): Date {
  const s = parseSchedule(schedule);
  const t = now.getTime();
  if (s.kind === 'every') {
    if (lastRunAt === undefined) return new Date(t);
    return new Date(lastRunAt.getTime() + s.intervalMs);
  }
  const open = occurrenceAt(s, t);
  if (open && (lastRunAt === undefined || lastRunAt.getTime() < open.start)) return new Date(open.start);
  return new Date(nextStartAfter(s, t));
}

/** Whether a run is due now. */
export function isDue(schedule: string, lastRunAt: Date | undefined, now: Date): boolean {
  return nextDue(schedule, lastRunAt, now).getTime() <= now.getTime();
}

/** The schedule in words, for `vmlink backup status`. */
export function describeSchedule(schedule: string): string {
  const s = parseSchedule(schedule);
  if (s.kind === 'every') return `every ${schedule.slice(6)}`;
  return `daily between ${schedule.slice(0, 5)} and ${schedule.slice(6)} UTC`;
}
