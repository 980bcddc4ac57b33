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

/** A value with the version it was written at (see `Store.getVersioned`). */
export interface Versioned<T> {
  value: T;
  /**
   * Decimal; grows with every write anywhere in the store (etcd: the key's mod revision), so a later write of any
   * key has a larger version. Owner records use it as their fencing token.
   */
  version: string;
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

  // Versioned keys (compare-and-set: owner records, leadership-guarded writes).
  /** The value under `key` with its version, or undefined. */
  getVersioned<T>(key: string): Promise<Versioned<T> | undefined>;
  /** Every key starting with `prefix`, sorted, with its value and version. */
  listVersioned<T>(prefix: string): Promise<Array<{ key: string } & Versioned<T>>>;
  /**
   * Sets `key` to `value` only if its version is still `expected` (`null`: only if the key is absent), atomically.
   * Returns the new version, or undefined when the key had changed (then nothing was written).
   */
  putIf(key: string, value: unknown, expected: string | null): Promise<string | undefined>;
  /** Removes `key` only if its version is still `expected`; returns whether it did. */
  deleteIf(key: string, expected: string): Promise<boolean>;

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
