import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SqliteStore } from '../store/sqlite.js';
import { scopeText } from '../wire-access.js';
import { matchesAny } from './roles.js';
import { TokenStore } from './tokens.js';

describe('TokenStore', () => {
  it('keeps the SHA-256 of the secret only, and refuses the token once expired', async () => {
    const store = new SqliteStore(':memory:');
    let now = new Date('2026-01-01T00:00:00Z');
    const tokens = new TokenStore(store, () => now);
    const t = await tokens.create(
      { name: 'ci', role: 'operator', scopes: {}, expiresInSeconds: 3600 },
      'adm',
    );
    const [, id, secret] = t.token.match(/^vmlt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/)!;
    const kept = await store.list<Record<string, unknown>>('auth/');
    expect(kept).toEqual([
      {
        key: `auth/tokens/${id}`,
        value: expect.objectContaining({ hash: createHash('sha256').update(secret!).digest('hex') }),
      },
    ]);
    expect(JSON.stringify(kept)).not.toContain(secret);
    expect(await tokens.authenticate(t.token)).toEqual({ who: 'ci', role: 'operator', scopes: {} });
    expect((await tokens.list())[0]).toMatchObject({ lastUsedAt: '2026-01-01T00:00:00.000Z' });
    now = new Date('2026-01-01T01:00:00Z');
    await expect(tokens.authenticate(t.token)).rejects.toMatchObject({
      kind: 'unauthorized',
      message: 'API token ci expired at 2026-01-01T01:00:00.000Z',
    });
    await store.close();
  });

  it('writes last use at most once a minute per token', async () => {
    const store = new SqliteStore(':memory:');
    let now = new Date('2026-01-01T00:00:00Z');
    const tokens = new TokenStore(store, () => now);
    const t = await tokens.create({ name: 'busy', role: 'read-only', scopes: {} }, 'adm');
    await tokens.authenticate(t.token);
    now = new Date('2026-01-01T00:00:30Z');
    await tokens.authenticate(t.token);
    expect((await tokens.list())[0]!.lastUsedAt).toBe('2026-01-01T00:00:00.000Z');
    now = new Date('2026-01-01T00:01:01Z');
    await tokens.authenticate(t.token);
    expect((await tokens.list())[0]!.lastUsedAt).toBe('2026-01-01T00:01:01.000Z');
    await tokens.revoke('busy');
    expect(await store.list('auth/')).toEqual([]);
    await store.close();
  });
});

describe('scopes', () => {
  it('match names and globs whole, never as a part', () => {
    expect(matchesAny('web1', ['web*'])).toBe(true);
    expect(matchesAny('web12', ['web?'])).toBe(false);
    expect(matchesAny('myweb1', ['web*'])).toBe(false);
    expect(matchesAny('db1', ['web*', 'db1'])).toBe(true);
    expect(scopeText({ hosts: ['h1', 'h2'], vms: ['web*'] })).toBe('hosts=h1,h2 vms=web*');
    expect(scopeText({})).toBe('all');
  });
});
