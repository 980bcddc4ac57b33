// A fast ping from inside a namespace, for measuring how long a guest stops answering (live migration).
import { type ChildProcess, spawn } from 'node:child_process';

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
