// A fast ping from inside a namespace, for measuring how long a guest stops answering (live migration).
import { type ChildProcess, spawn } from 'node:child_process';
import { pollUntil, sleep } from '../../src/shared/time.js';

/** A running ping; `stop` ends it and resolves with the reply times (ms, from ping's `-D` stamps). */
export interface Pinger {
  stop: () => Promise<number[]>;
  /** The replies so far (ms). */
  readonly times: readonly number[];
  /** Date.now() when `stop` was called (NaN before). */
  stoppedAt: number;
  /** SIGKILL without waiting (for afterAll / cleanup after a failure). */
  kill: () => void;
}

/** Pings `ip` every `intervalS` seconds (default 10 ms) from namespace `ns`. */
export function startPing(ns: string, ip: string, intervalS = 0.01): Pinger {
  const times: number[] = [];
  const child: ChildProcess = spawn(
    'ip',
    ['netns', 'exec', ns, 'ping', '-n', '-D', '-i', String(intervalS), ip],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  const exited = new Promise((r) => child.once('exit', r));
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const m = /^\[(\d+\.\d+)\].*bytes from/.exec(buf.slice(0, nl));
      if (m) times.push(Number(m[1]) * 1000);
      buf = buf.slice(nl + 1);
    }
  });
  const p: Pinger = {
    times,
    stoppedAt: Number.NaN,
    stop: async () => {
      p.stoppedAt = Date.now();
      child.kill('SIGINT');
      await exited;
      return times;
    },
    kill: () => child.kill('SIGKILL'),
  };
  return p;
}

/**
 * The largest gap (ms) between consecutive reply times; NaN with fewer than two replies. With `endMs` (the
 * pinger's stop time, same clock) the silence from the last reply to the end counts too: replies that never
 * came back must not hide the outage.
 */
export function largestGap(times: readonly number[], endMs?: number): number {
  if (times.length < 2) return Number.NaN;
  let max = endMs === undefined ? 0 : Math.max(0, endMs - times.at(-1)!);
  for (let i = 1; i < times.length; i++) max = Math.max(max, times[i]! - times[i - 1]!);
  return max;
}

/** What a 10 ms ping saw around a move (`pingAround`). */
export interface PingAround<T> {
  /** What the move returned. */
  result: T;
  /** Whether the target answered before the move started. */
  answeredBefore: boolean;
  /** The reply times (ms) and Date.now() when the move returned and when the ping stopped. */
  times: number[];
  returned: number;
  stoppedAt: number;
}

/**
 * Pings `ip` from namespace `ns` every 10 ms around `move`: waits up to 10 s for a first reply, 500 ms more, runs the
 * move, then waits up to 10 s for a reply sent after it returned and 500 ms more for the tail. The ping is killed
 * whatever happens.
 */
export async function pingAround<T>(ns: string, ip: string, move: () => Promise<T>): Promise<PingAround<T>> {
  const pinger = startPing(ns, ip);
  try {
    await pollUntil(() => pinger.times.length > 0, { timeoutMs: 10_000, intervalMs: 20 });
    const answeredBefore = pinger.times.length > 0;
    await sleep(500);
    const result = await move();
    const returned = Date.now();
    await pollUntil(() => (pinger.times.at(-1) ?? 0) > returned, { timeoutMs: 10_000, intervalMs: 20 });
    await sleep(500);
    const times = await pinger.stop();
    return { result, answeredBefore, times, returned, stoppedAt: pinger.stoppedAt };
  } finally {
    pinger.kill();
  }
}
