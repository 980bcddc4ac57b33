import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { MIGRATIONS, type Migration, migrate, SCHEMA_VERSION } from './migrations.js';
import { SqliteStore } from './sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'vmlink-migrate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const userVersion = (db: Database.Database) => db.pragma('user_version', { simple: true }) as number;

/** The shipped migrations plus two more: a column added, then a table renamed with its data. */
const later: Migration[] = [
  ...MIGRATIONS,
  {
    version: SCHEMA_VERSION + 1,
    description: 'events get a host column',
    up: (db) => db.exec('ALTER TABLE events ADD COLUMN host TEXT'),
  },
  {
    version: SCHEMA_VERSION + 2,
    description: 'kv becomes entries',
    up: (db) => db.exec('ALTER TABLE kv RENAME TO entries'),
  },
];

describe('store schema migrations', () => {
  it('numbers the shipped migrations 1..N and records N in a new store', async () => {
    expect(MIGRATIONS.map((m) => m.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
    const s = new SqliteStore(':memory:');
    expect(s.schema).toEqual({ from: 0, to: SCHEMA_VERSION });
    await s.close();
  });

  it('adopts a store made before schema versions (tables, user_version 0) and keeps its data', async () => {
    const path = join(dir, 'legacy.db');
    const old = new Database(path);
    old.exec(`CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);
      INSERT INTO kv VALUES ('spec/current', '{"text":"version: 1"}');`);
    old.close();
    const s = new SqliteStore(path);
    expect(s.schema).toEqual({ from: 0, to: SCHEMA_VERSION });
    expect(await s.get('spec/current')).toEqual({ text: 'version: 1' });
    await s.close();
    // Opening again runs nothing.
    const again = new SqliteStore(path);
    expect(again.schema).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION });
    await again.close();
  });

  it('moves an older store forward step by step, in order, keeping its data', async () => {
    const path = join(dir, 'older.db');
    const a = new SqliteStore(path);
    await a.put('k', 1);
    await a.appendEvent('apply', 'done');
    await a.close();
    const db = new Database(path);
    expect(migrate(db, path, later)).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION + 2 });
    expect(userVersion(db)).toBe(SCHEMA_VERSION + 2);
    expect(db.prepare('SELECT value FROM entries WHERE key = ?').get('k')).toEqual({ value: '1' });
    expect(db.prepare('SELECT message, host FROM events').all()).toEqual([{ message: 'done', host: null }]);
    db.close();
  });

  it('rolls back a failing step and leaves the store at the last good version', () => {
    const db = new Database(':memory:');
    const broken: Migration[] = [
      ...MIGRATIONS,
      {
        version: SCHEMA_VERSION + 1,
        description: 'half done, then fails',
        up: (d) => {
          d.exec('CREATE TABLE half (x)');
          d.exec('INSERT INTO nowhere VALUES (1)');
        },
      },
    ];
    expect(() => migrate(db, 'mem', broken)).toThrow(/no such table: nowhere/);
    expect(userVersion(db)).toBe(SCHEMA_VERSION);
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'half'").get()).toBeUndefined();
    db.close();
  });

  it('refuses a store from a newer vmlink before changing it, naming both schema versions', async () => {
    const path = join(dir, 'newer.db');
    const db = new Database(path);
    db.pragma(`user_version = ${SCHEMA_VERSION + 3}`);
    db.close();
    expect(() => new SqliteStore(path)).toThrow(
      new RegExp(
        `store .*newer\\.db has schema version ${SCHEMA_VERSION + 3}, newer than this vmlink .* knows \\(up to ${SCHEMA_VERSION}\\)`,
      ),
    );
    const check = new Database(path);
    expect(userVersion(check)).toBe(SCHEMA_VERSION + 3);
    expect(check.prepare("SELECT name FROM sqlite_master WHERE name = 'kv'").get()).toBeUndefined();
    check.close();
  });

  it('refuses migrations that are not numbered 1..N', () => {
    const db = new Database(':memory:');
    expect(() => migrate(db, 'mem', [later[0]!, later[2]!])).toThrow(/out of order: #1 has version/);
    db.close();
  });
});
