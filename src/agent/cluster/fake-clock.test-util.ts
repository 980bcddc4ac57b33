// A clock for the cluster tests (lease-keeper.ts's `Clock`): time moves only when a test says so.
import type { Clock } from './lease-keeper.js';

export const T0 = Date.parse('2026-12-01T10:00:00.000Z');

/** A clock that moves only when told, running due timers in order (and the promises they start) as it goes. */
export class FakeClock implements Clock {
  t = T0;
  private seq = 0;
  private timers: Array<{ id: number; at: number; fn: () => void }> = [];
  now = () => this.t;
  setTimeout = (fn: () => void, ms: number) => {
    const id = ++this.seq;
    this.timers.push({ id, at: this.t + ms, fn });
    return id;
  };
  clearTimeout = (h: unknown) => {
    this.timers = this.timers.filter((x) => x.id !== h);
  };
  /** Moves to `ms` after T0. */
  async to(ms: number): Promise<void> {
    const end = T0 + ms;
    for (;;) {
      await flush();
      const due = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((x) => x !== due);
      this.t = Math.max(this.t, due.at);
      due.fn();
    }
    this.t = end;
    await flush();
  }
}

/** Lets pending promise chains run (timers of the fake clock do not move). */
export async function flush(): Promise<void> {
  for (let i = 0; i < 30; i++) await new Promise((r) => setImmediate(r));
}
