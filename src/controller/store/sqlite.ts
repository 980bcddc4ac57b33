import { chmodSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS, type Migration, type MigrationResult, migrate } from './migrations.js';
import type { Store, StoredAuditEntry, StoreEvent, Versioned } from './types.js';
import { storeValueText } from './value-codec.js';

/** Store on an embedded SQLite database (WAL mode); the default for one controller. */
export class SqliteStore implements Store {
  private readonly db: Database.Database;

  /** What opening did to the schema (see migrations.ts). */
  readonly schema: MigrationResult;

  /**
   * Opens (creating if needed) the database at `path` (`:memory:` for tests) and migrates its schema forward;
   * refuses a store from a newer vmlink. `migrations` is for tests.
   */
  constructor(path: string, migrations: readonly Migration[] = MIGRATIONS) {
    // The directory is shared with agents' state (QEMU's user must traverse it); the database itself is private.
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    this.db = new Database(path);
    if (path !== ':memory:') chmodSync(path, 0o600);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 5000');
    try {
      this.schema = migrate(this.db, path, migrations);
    } catch (e) {
      this.db.close();
      throw e;
    }
  }

  async get<T>(key: string): Promise<T | undefined> {
    const row = this.db.prepare('SELECT value FROM kv WHERE key = ?').get(key) as
      | { value: string }
      | undefined;
    return row ? (JSON.parse(row.value) as T) : undefined;
  }

  async put(key: string, value: unknown): Promise<void> {
    this.db.transaction(() => this.write(key, storeValueText(value, key)))();
  }

  /** Writes `key` at the next revision (inside a transaction); returns that revision. */
  private write(key: string, text: string): number {
    const revision = this.nextRevision();
    this.db
      .prepare(
        'INSERT INTO kv (key, value, version) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version',
      )
      .run(key, text, revision);
    return revision;
  }

  private nextRevision(): number {
    const row = this.db
      .prepare('UPDATE kv_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision')
      .get() as { revision: number };
    return row.revision;
  }

  async getVersioned<T>(key: string): Promise<Versioned<T> | undefined> {
    const row = this.db.prepare('SELECT value, version FROM kv WHERE key = ?').get(key) as
      | { value: string; version: number }
      | undefined;
    return row ? { value: JSON.parse(row.value) as T, version: String(row.version) } : undefined;
  }

  async listVersioned<T>(prefix: string): Promise<Array<{ key: string } & Versioned<T>>> {
    const rows = this.db
      .prepare('SELECT key, value, version FROM kv WHERE key >= ? AND key < ? ORDER BY key')
      .all(prefix, `${prefix}\uffff`) as Array<{ key: string; value: string; version: number }>;
    return rows.map((r) => ({ key: r.key, value: JSON.parse(r.value) as T, version: String(r.version) }));
  }

  async putIf(key: string, value: unknown, expected: string | null): Promise<string | undefined> {
    const text = storeValueText(value, key);
    return this.db.transaction(() => {
      const row = this.db.prepare('SELECT version FROM kv WHERE key = ?').get(key) as
        | { version: number }
        | undefined;
      const current = row ? String(row.version) : null;
      if (current !== expected) return undefined;
      return String(this.write(key, text));
    })();
  }

  async deleteIf(key: string, expected: string): Promise<boolean> {
    const info = this.db.prepare('DELETE FROM kv WHERE key = ? AND version = ?').run(key, Number(expected));
    return info.changes > 0;
  }

  async delete(key: string): Promise<void> {
    this.db.prepare('DELETE FROM kv WHERE key = ?').run(key);
  }

  async list<T>(prefix: string): Promise<Array<{ key: string; value: T }>> {
    // Range scan instead of LIKE so '%' and '_' in keys are not wildcards.
    const rows = this.db
      .prepare('SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key')
      .all(prefix, `${prefix}\uffff`) as Array<{ key: string; value: string }>;
    return rows.map((r) => ({ key: r.key, value: JSON.parse(r.value) as T }));
  }

  async appendEvent(kind: string, message: string): Promise<StoreEvent> {
    const time = new Date().toISOString();
    const info = this.db
      .prepare('INSERT INTO events (time, kind, message) VALUES (?, ?, ?)')
      .run(time, kind, message);
    return { id: Number(info.lastInsertRowid), time, kind, message };
  }

  async events(limit: number): Promise<StoreEvent[]> {
    const rows = this.db
      .prepare('SELECT id, time, kind, message FROM events ORDER BY id DESC LIMIT ?')
      .all(limit) as StoreEvent[];
    return rows.reverse();
  }

  async appendAudit(time: string, record: unknown, keep: number): Promise<void> {
    this.db.transaction(() => {
      const info = this.db
        .prepare('INSERT INTO audit (time, record) VALUES (?, ?)')
        .run(time, JSON.stringify(record));
      // Ids only grow (AUTOINCREMENT), so everything `keep` or more below the newest is the oldest.
      this.db.prepare('DELETE FROM audit WHERE id <= ?').run(Number(info.lastInsertRowid) - keep);
    })();
  }

  async auditEntries(since: string | undefined, limit: number): Promise<StoredAuditEntry[]> {
    const rows = this.db
      .prepare('SELECT id, time, record FROM audit WHERE time >= ? ORDER BY id DESC LIMIT ?')
      .all(since ?? '', limit) as Array<{ id: number; time: string; record: string }>;
    return rows.reverse().map((r) => ({ id: r.id, time: r.time, record: JSON.parse(r.record) as unknown }));
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
