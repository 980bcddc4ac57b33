// Child processes in a process group of their own (test/helpers/int-run.ts), stopped as a whole: first asked
// (a signal to the leader only, which then cleans up: graceful-stop.ts for vitest), then, after a grace period or at
// once when forced, SIGTERM and at last SIGKILL to every process of the group (vitest's fork workers and what the
// tests started in the group). A group of its own also keeps a terminal's Ctrl-C, which reaches the whole foreground
// group, from killing the workers before their afterAll hooks could run: only the runner gets it, and it asks.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';

/** Spawns `cmd` as the leader of a new process group (setsid): its pid is the group's id. */
export function spawnGroup(cmd: string, args: string[], options: SpawnOptions): ChildProcess {
  return spawn(cmd, args, { ...options, detached: true });
}

/** Sends `signal` to every process of group `pgid`; false when none is left. */
export function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/** Whether any process of group `pgid` is left (a zombie leader not yet reaped counts). */
export const groupAlive = (pgid: number): boolean => signalGroup(pgid, 0);

export interface StopOptions {
  /** Sent to the leader first; undefined goes straight to SIGTERM. */
  ask?: NodeJS.Signals;
  /** How long the leader may take after `ask` before the group gets SIGTERM. */
  graceMs: number;
  /** How long the group may take after SIGTERM before SIGKILL. */
  killMs: number;
  /** Polling interval while waiting (ms). */
  pollMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Stops `child`'s whole group and resolves when no process of it is left (after SIGKILL at the latest). The leader
 * may have exited already: what it left in the group is still stopped. `hurry` (a promise) cuts the grace short.
 */
export async function stopGroup(
  child: ChildProcess,
  options: StopOptions,
  hurry: Promise<void> = new Promise(() => {}),
): Promise<void> {
  const pgid = child.pid;
  if (pgid === undefined) return;
  const poll = options.pollMs ?? 100;
  let hurried = false;
  void hurry.then(() => {
    hurried = true;
  });
  const leaderDone = () => child.exitCode !== null || child.signalCode !== null;
  const waitUntil = async (done: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!done() && !hurried && Date.now() < end) await sleep(poll);
  };
  if (options.ask && !leaderDone()) {
    try {
      child.kill(options.ask);
    } catch {
      // Gone meanwhile: the group is stopped below.
    }
    await waitUntil(leaderDone, options.graceMs);
  }
  // The leader is reaped by node once it exits; what it left behind is stopped now.
  if (!signalGroup(pgid, 'SIGTERM')) return;
  hurried = false;
  await waitUntil(() => !groupAlive(pgid), options.killMs);
  signalGroup(pgid, 'SIGKILL');
  await waitUntil(() => !groupAlive(pgid), options.killMs);
}
