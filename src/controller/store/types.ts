/** One entry of the controller's event log (applies, failures, host changes). */
export interface StoreEvent {
  id: number;
  time: string;
  kind: string;
  message: string;
}

/** One entry of the audit trail: when, and what (a JSON record the audit module defines). */
export interface StoredAuditEntry {
  id: number;
  time: string;
  record: unknown;
}

/** The controller's state store: JSON values under string keys plus an append-only event log. */
export interface Store {
  // Keys.
  /** The value under `key`, or undefined. */
  get<T>(key: string): Promise<T | undefined>;
  /** Sets `key` to `value` (JSON-serialisable). */
  put(key: string, value: unknown): Promise<void>;
  /** Removes `key`; a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Every key starting with `prefix`, sorted, with its value. */
  list<T>(prefix: string): Promise<Array<{ key: string; value: T }>>;

  // Events.
  /** Appends an event and returns it. */
  appendEvent(kind: string, message: string): Promise<StoreEvent>;
  /** The newest `limit` events, oldest first. */
  events(limit: number): Promise<StoreEvent[]>;

  // Audit trail.
  /** Appends an audit record at `time` (ISO), then prunes the oldest so that at most `keep` remain. */
  appendAudit(time: string, record: unknown, keep: number): Promise<void>;
  /** Audit entries at or after `since` (ISO; all when undefined), oldest first, at most the newest `limit`. */
  auditEntries(since: string | undefined, limit: number): Promise<StoredAuditEntry[]>;

  /** Releases the store. */
  close(): Promise<void>;
}
