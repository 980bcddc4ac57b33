// Waiting: the one `sleep` and the one poll loop, so deadlines and abort handling are written once.
import { TimeoutError } from './errors.js';

/** Resolves after `ms` milliseconds; rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Options of `pollUntil`. */
export interface PollOptions {
  timeoutMs: number;
  /** Pause between checks (default 50 ms). */
  intervalMs?: number;
  signal?: AbortSignal;
}

/**
 * Calls `check` until it returns something other than undefined/false, and returns that; returns undefined once
 * `timeoutMs` has passed (the check runs one last time at the deadline, so a slow poll never misses it).
 */
export async function pollUntil<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  opts: PollOptions,
): Promise<T | undefined> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    await sleep(Math.min(opts.intervalMs ?? 50, left), opts.signal);
  }
}

/** `pollUntil` that throws `TimeoutError(message, subject)` instead of returning undefined. */
export async function waitFor<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  opts: PollOptions & { message: string; subject?: string },
): Promise<T> {
  const v = await pollUntil(check, opts);
  if (v === undefined) throw new TimeoutError(opts.message, opts.subject);
  return v;
}
