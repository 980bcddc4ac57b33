// What every network conformance suite shares: the environment a driver under test gets, the backend's knobs,
// and the check that nothing was left running.
import { readdir } from 'node:fs/promises';
import type { Runner } from '../../exec/runner.js';
import type { NetworkConfig } from '../../shared/model.js';
import { isRunning, processArgv } from '../../shared/process.js';

/** What a driver under test gets: a runner, its own state directory and the namespace to manage. */
export interface ConformanceEnv {
  runner: Runner;
  stateDir: string;
  netns: string;
}

/** Pids of live processes whose command line mentions `needle` (to prove nothing was left running). */
export async function pidsMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if ((await processArgv(pid))?.some((a) => a.includes(needle)) && (await isRunning(pid))) pids.push(pid);
  }
  return pids;
}

/** Backend-specific knobs of the conformance suites. */
export interface ConformanceOptions {
  /** Modes the backend realises (default: nat, bridge, isolated): the nat/isolated suite runs only with nat. */
  modes?: NetworkConfig['mode'][];
  /** Unplugs a port behind the driver's back (ovs: `ovs-vsctl del-port`); default `ip link set nomaster`. */
  detachPort?: (env: ConformanceEnv, tap: string) => Promise<void>;
}
