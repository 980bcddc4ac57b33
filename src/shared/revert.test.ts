import { describe, expect, it } from 'vitest';
import { Reverter } from './revert.js';

describe('Reverter', () => {
  it('undoes newest first on fail and keeps going past a failing step', async () => {
    const seen: string[] = [];
    const r = new Reverter();
    r.add(() => seen.push('a'));
    r.add(() => {
      throw new Error('boom');
    });
    r.add(async () => seen.push('c'));
    await r.fail();
    expect(seen).toEqual(['c', 'a']);
    await r.fail();
    expect(seen).toEqual(['c', 'a']);
  });

  it('does nothing after success', async () => {
    const seen: string[] = [];
    const r = new Reverter();
    r.add(() => seen.push('a'));
    r.success();
    await r.fail();
    expect(seen).toEqual([]);
  });

  it('works in try/finally', async () => {
    const seen: string[] = [];
    await expect(
      (async () => {
        const r = new Reverter();
        try {
          seen.push('create');
          r.add(() => seen.push('delete'));
          throw new Error('later step failed');
        } finally {
          await r.fail();
        }
      })(),
    ).rejects.toThrow('later step failed');
    expect(seen).toEqual(['create', 'delete']);
  });
});
