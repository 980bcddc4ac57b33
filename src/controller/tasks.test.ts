import { describe, expect, it } from 'vitest';
import { InvalidStateError } from '../shared/errors.js';
import { TaskManager } from './tasks.js';

describe('tasks', () => {
  it('reports progress incrementally and the result', async () => {
    const tm = new TaskManager();
    const id = tm.start('apply', async (ctx) => {
      ctx.progress('one');
      ctx.progress('two');
      return { applied: 2 };
    });
    const done = await tm.wait(id);
    expect(done).toMatchObject({ state: 'succeeded', result: { applied: 2 }, progress: ['one', 'two'] });
    expect(tm.get(id, 1).progress).toEqual(['two']);
  });

  it('keeps a failure as a typed error body', async () => {
    const tm = new TaskManager();
    const id = tm.start('apply', async () => {
      throw new InvalidStateError('stop requires running', 'vm/web1');
    });
    expect((await tm.wait(id)).error).toEqual({
      kind: 'invalid-state',
      message: 'stop requires running',
      subject: 'vm/web1',
    });
  });

  it('cancels through the abort signal', async () => {
    const tm = new TaskManager();
    const id = tm.start('verify', async (ctx) => {
      await new Promise((r) => ctx.signal.addEventListener('abort', r));
      throw new Error('aborted');
    });
    expect(tm.running(['verify'])?.id).toBe(id);
    tm.cancel(id);
    expect((await tm.wait(id)).state).toBe('cancelled');
    expect(tm.running(['verify'])).toBeUndefined();
  });
});
