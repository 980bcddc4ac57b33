// The audit trail: one entry per mutating API call (refused ones included), in the store's audit table, bounded.
// Entries hold who, from where, which route and object, and how it ended; never a request or response body, since
// bodies carry join tokens, new API tokens and secret values.
import { AUDIT_ENTRIES_MAX } from '../../shared/limits.js';
import type { Store } from '../store/types.js';
import type { AuditEntry } from '../wire-access.js';

/** What a caller records of one call; the log adds its id and time. */
export type AuditRecord = Omit<AuditEntry, 'id' | 'time'>;

/** Longest text field of an entry (a path no route matched is attacker-chosen). */
const FIELD_MAX_CHARS = 200;

/** The controller's audit trail, keeping the newest `keep` entries. */
export class AuditLog {
  constructor(
    private readonly store: Store,
    private readonly keep: number = AUDIT_ENTRIES_MAX,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Appends `record` (its text fields cut to a bounded length), pruning the oldest beyond the bound. */
  async record(record: AuditRecord): Promise<void> {
    const cut = (s: string) => (s.length > FIELD_MAX_CHARS ? `${s.slice(0, FIELD_MAX_CHARS)}...` : s);
    const bounded: AuditRecord = {
      ...record,
      who: cut(record.who),
      remote: cut(record.remote),
      method: cut(record.method),
      route: cut(record.route),
      ...(record.object === undefined ? {} : { object: cut(record.object) }),
      ...(record.errorKind === undefined ? {} : { errorKind: cut(record.errorKind) }),
    };
    await this.store.appendAudit(this.now().toISOString(), bounded, this.keep);
  }

  /** Entries at or after `since`, oldest first, at most the newest `limit`. */
  async list(since: string | undefined, limit: number): Promise<AuditEntry[]> {
    // Stored times are toISOString()'s; a `since` in another ISO form (no milliseconds, an offset) is made alike.
    const from = since === undefined ? undefined : new Date(since).toISOString();
    const rows = await this.store.auditEntries(from, limit);
    return rows.map((r) => ({ ...(r.record as AuditRecord), id: r.id, time: r.time }));
  }
}
