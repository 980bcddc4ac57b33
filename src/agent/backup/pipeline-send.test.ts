// The chunk buffers a backup job reuses (pipeline-send.ts's BufferPool): whole buffers of one size only, at most a
// few kept, and none kept once the pool sat idle.
import { describe, expect, it } from 'vitest';
import { BufferPool } from './pipeline-send.js';

describe('BufferPool', () => {
  it('hands a buffer back out after it was given back, whole, and only buffers of its own size', () => {
    const pool = new BufferPool(4096, 2, 60_000);
    const a = pool.take();
    expect(a.length).toBe(4096);
    expect(a.byteOffset).toBe(0);
    expect(a.buffer.byteLength).toBe(4096);
    pool.give(a.subarray(0, 100)); // a view of it (a short chunk's read): the whole buffer is kept
    const b = pool.take();
    expect(b.buffer).toBe(a.buffer);
    expect(b.length).toBe(4096);
    pool.give(Buffer.alloc(100)); // not one of its size (a pooled slab's view): dropped
    pool.give(Buffer.from(new ArrayBuffer(8192)));
    pool.give(undefined);
    expect(pool.kept).toBe(0);
    expect(pool.take().buffer).not.toBe(a.buffer);
  });

  it('keeps at most its maximum, and drops them all once idle', async () => {
    const pool = new BufferPool(1024, 2, 30);
    const bufs = [pool.take(), pool.take(), pool.take()];
    for (const b of bufs) pool.give(b);
    expect(pool.kept).toBe(2);
    const start = Date.now();
    while (pool.kept > 0 && Date.now() - start < 5000) await new Promise((r) => setTimeout(r, 10));
    expect(pool.kept).toBe(0);
  });
});
