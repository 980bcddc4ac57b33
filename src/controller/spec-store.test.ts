import { describe, expect, it } from 'vitest';
import { InvalidSpecError } from '../shared/errors.js';
import { SpecParser, SpecStore } from './spec-store.js';
import { SqliteStore } from './store/sqlite.js';

const text = (n: number) => `version: 1\nhosts: [{ name: host${n}, agent: "unix:///a" }]\n`;

describe('spec store', () => {
  it('parses a text once and hands out the same spec, keeping only the last few', () => {
    const p = new SpecParser();
    const first = p.parse(text(1), 'a.yaml');
    expect(p.parse(text(1), 'a.yaml')).toBe(first);
    // The source is part of the key: messages name it.
    expect(p.parse(text(1), 'b.yaml')).not.toBe(first);
    for (let i = 2; i <= 10; i++) p.parse(text(i), 'a.yaml');
    const again = p.parse(text(1), 'a.yaml');
    expect(again).not.toBe(first);
    expect(again).toEqual(first);
    expect(() => p.parse('version: 2\n', 'bad.yaml')).toThrow(InvalidSpecError);
  });

  it('reads the stored spec through the cache, and the last good one for hosts a failed apply dropped', async () => {
    const specs = new SpecStore(new SqliteStore(':memory:'));
    expect(await specs.current()).toBeUndefined();
    expect(await specs.previous()).toBeUndefined();
    await specs.recordAttempt(text(1), 'a.yaml');
    const cur = await specs.current();
    expect(cur?.spec.hosts[0]?.name).toBe('host1');
    expect((await specs.current())?.spec).toBe(cur?.spec);
    // No apply completed yet: the attempted one is all there is.
    expect((await specs.previous())?.hosts[0]?.name).toBe('host1');
    await specs.recordSuccess(text(1), 'a.yaml');
    await specs.recordAttempt(text(2), 'a.yaml');
    expect((await specs.current())?.spec.hosts[0]?.name).toBe('host2');
    expect((await specs.previous())?.hosts[0]?.name).toBe('host1');
    await specs.clear();
    expect(await specs.current()).toBeUndefined();
  });
});
