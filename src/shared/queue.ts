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
