// The SQLite store's schema versions: ordered migrations, each run once, in a transaction, recorded in
// PRAGMA user_version, so that a store made by an older vmlink moves forward on open and a newer one is refused.
import type Database from 'better-sqlite3';
import { VERSION, VersionMismatchError } from '../../shared/version.js';

/** One step of the schema: run on stores whose `user_version` is below `version`. */
export interface Migration {
  version: number;
  description: string;
  up(db: Database.Database): void;
}

/** Every schema step, oldest first; append new ones, never edit a released one. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'key-value table and event log',
    // IF NOT EXISTS: stores made before schema versions (user_version 0) already have both tables.
    up: (db) =>
      db.exec(`
        CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);
      `),
  },
  {
    version: 2,
    description: 'audit trail of API calls',
    // Its own table (not kv): appended on every mutating call and pruned by id, oldest first.
    up: (db) =>
      db.exec(`
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, record TEXT NOT NULL);
        CREATE INDEX audit_time ON audit (time);
      `),
  },
  {
    version: 3,
    description: 'versions of keys (compare-and-set, fencing tokens)',
    // One counter for the whole store, as etcd's revision: a later write of any key gets a larger version.
    up: (db) =>
      db.exec(`
        ALTER TABLE kv ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
        CREATE TABLE kv_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL);
        INSERT INTO kv_revision (id, revision) VALUES (1, 1);
      `),
  },
];

/** The schema version this build writes. */
export const SCHEMA_VERSION: number = MIGRATIONS.at(-1)!.version;

/** What `migrate` did: the schema version found and the one left. */
export interface MigrationResult {
  from: number;
  to: number;
}

/**
 * Brings `db` to the newest schema of `migrations` (versions 1..N in order), one transaction per step; refuses a
 * store whose schema is newer than this build knows, before touching it. `name` names the store in errors.
 */
export function migrate(
  db: Database.Database,
  name: string,
  migrations: readonly Migration[] = MIGRATIONS,
): MigrationResult {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1)
      throw new Error(`store migrations out of order: #${i} has version ${m.version}, expected ${i + 1}`);
  });
  const latest = migrations.length;
  const from = db.pragma('user_version', { simple: true }) as number;
  if (from > latest)
    throw new VersionMismatchError(
      `store ${name} has schema version ${from}, newer than this vmlink ${VERSION} knows (up to ${latest}): ` +
        'it was written by a newer vmlink; run that version (or newer), or restore a copy of the store from before the upgrade',
      name,
    );
  for (const m of migrations.slice(from)) {
    db.transaction(() => {
      m.up(db);
      db.pragma(`user_version = ${m.version}`);
    })();
  }
  return { from, to: Math.max(from, latest) };
}
