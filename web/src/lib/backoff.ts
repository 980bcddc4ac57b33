// Retry delays of the live parts (polls, event stream, console reconnects): doubling from a base to a cap, reset on
// success, with a little jitter so many tabs do not retry in step. Pure: unit-tested in backoff.test.ts.

export class Backoff {
  private failures = 0;

  constructor(
    private readonly baseMs: number,
    private readonly capMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next try: the base after a success, doubling per failure up to the cap. */
  next(): number {
    const d = Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.failures, 20));
    // Up to 10 % jitter, never above the cap.
    return Math.min(this.capMs, Math.round(d * (1 + 0.1 * this.random())));
  }

  failed(): void {
    this.failures++;
  }

  succeeded(): void {
    this.failures = 0;
  }

  get failing(): number {
    return this.failures;
  }
}
