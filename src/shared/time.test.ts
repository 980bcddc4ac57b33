import { describe, expect, it } from 'vitest';
import { pollUntil, sleep, waitFor } from './time.js';

describe('sleep', () => {
  it('waits, and rejects when aborted', async () => {
    const t0 = Date.now();
    await sleep(30);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
    const ac = new AbortController();
    const p = sleep(10_000, ac.signal);
    ac.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
  });
});

describe('pollUntil / waitFor', () => {
  it('returns the first truthy result, or undefined / TimeoutError at the deadline', async () => {
    let n = 0;
    expect(await pollUntil(() => (++n >= 3 ? n : undefined), { timeoutMs: 1_000, intervalMs: 1 })).toBe(3);
    expect(await pollUntil(() => false, { timeoutMs: 20, intervalMs: 5 })).toBeUndefined();
    await expect(
      waitFor(() => undefined, { timeoutMs: 10, message: 'never came', subject: 'x' }),
    ).rejects.toThrow('never came');
  });
});
