import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { storeConformance } from './conformance.js';
import { SqliteStore } from './sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'vmlink-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

storeConformance('sqlite (memory)', async () => new SqliteStore(':memory:'));
storeConformance('sqlite (file)', async () => new SqliteStore(join(dir, `${Math.random()}.db`)));

it('keeps data across reopening the same file', async () => {
  const path = join(dir, 'persist.db');
  const a = new SqliteStore(path);
  await a.put('spec/current', { text: 'version: 1' });
  await a.appendEvent('apply', 'done');
  await a.close();
  const b = new SqliteStore(path);
  expect(await b.get('spec/current')).toEqual({ text: 'version: 1' });
  expect((await b.events(10)).map((e) => e.message)).toEqual(['done']);
  await b.close();
});
