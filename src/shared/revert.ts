// Undo steps for multi-step host changes (after Incus shared/revert): register an undo after each
// change; `success()` keeps the changes, `fail()` (call it in `finally`) undoes them newest first.
import { log } from './log.js';

/** One undo step. */
export type RevertFn = () => unknown | Promise<unknown>;

/** Collects undo steps and runs them in reverse order unless `success()` was called first. */
export class Reverter {
  private fns: RevertFn[] = [];
  private done = false;

  /** Registers an undo step for a change just made. */
  add(fn: RevertFn): void {
    this.fns.push(fn);
  }

  /** Keeps every change: later `fail()` calls do nothing. */
  success(): void {
    this.done = true;
    this.fns = [];
  }

  /** Undoes the registered changes newest first, unless `success()` was called; undo errors are logged, not thrown. */
  async fail(): Promise<void> {
    if (this.done) return;
    this.done = true;
    const fns = this.fns.reverse();
    this.fns = [];
    for (const fn of fns) {
      try {
        await fn();
      } catch (err) {
        log.warn({ err }, 'revert step failed');
      }
    }
  }
}
