// Serial execution: host changes of one agent (or one VM) run one after another, whatever their outcome.

/** Runs the functions given to `run` one at a time, in call order; a failure does not stop later ones. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `fn` after everything queued before it has settled; resolves or rejects with `fn`'s outcome. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/** One `SerialQueue` per key (a VM name, a socket): work on different keys runs concurrently. */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Runs `fn` after the work queued under `key` before it has settled. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.tails.get(key) ?? Promise.resolve()).then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    // Forget idle keys, so a long-lived driver does not keep one entry per VM it ever saw.
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Number of keys with queued or running work (for tests). */
  get size(): number {
    return this.tails.size;
  }
}

/**
 * At most `n` of the functions given to `run` at once, the rest waiting in call order: bounds what many callers
 * started side by side do to one shared service (e.g. etcd reads from every host's steps of one apply).
 */
export class Limiter {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly n: number) {
    if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`a limiter needs a positive count, got ${n}`);
  }

  /** Runs `fn` once fewer than `n` others run; resolves or rejects with its outcome. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.n) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await fn();
    } finally {
      // Hand the slot straight to the next waiter (the count stays), else free it.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }

  /** Calls running now and waiting (for tests). */
  get load(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }
}

/**
 * Calls `fn` on every item with at most `n` calls running at once and resolves with the results in item order; after
 * the first failure no new call starts, the running ones finish, and that failure rejects.
 */
export async function mapLimited<T, R>(
  items: readonly T[],
  n: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  let failed: { error: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (error) {
        failed ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, n), items.length) }, worker));
  if (failed) throw failed.error;
  return out;
}

/**
 * Calls `fn` on every item with at most `n` calls running at once; resolves with every outcome in item order
 * (settled: one failure does not stop the others, so the caller sees what each did).
 */
export async function settleLimited<T, R>(
  items: readonly T[],
  n: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i]!, i) };
      } catch (reason) {
        out[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, n), items.length) }, worker));
  return out;
}

/**
 * Waits for every promise to settle, then throws the first rejection (in array order) if any: work started side by
 * side has finished, one way or the other, before the caller cleans up after a failure.
 */
export async function allSettledOrThrow(promises: readonly Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(promises)).find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}
