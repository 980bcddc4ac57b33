// Typed wrapper over taskset(1) (util-linux): the CPU affinity of one thread, set through the runner. The kernel call
// is sched_setaffinity; taskset is the standard tool for it, so affinity goes through the exec layer like every other
// host change (logged, recordable in tests).
import { InvalidRequestError } from '../shared/errors.js';
import type { Runner } from './runner.js';

/** Highest CPU number a list may name (Linux's NR_CPUS is at most 8192). */
const CPU_MAX = 8191;

/** `taskset -pc LIST TID` as argv: thread `tid` may run on `cpus` only. */
export function tasksetArgv(tid: number, cpus: readonly number[]): string[] {
  if (!Number.isInteger(tid) || tid < 1) throw new InvalidRequestError(`invalid thread id ${tid}`);
  if (!cpus.length) throw new InvalidRequestError(`no CPU given for thread ${tid}`);
  for (const c of cpus)
    if (!Number.isInteger(c) || c < 0 || c > CPU_MAX)
      throw new InvalidRequestError(`invalid CPU number ${c}`);
  return ['taskset', '-pc', cpus.join(','), String(tid)];
}

/** Sets thread `tid`'s CPU affinity to `cpus`. */
export async function setThreadAffinity(runner: Runner, tid: number, cpus: readonly number[]): Promise<void> {
  await runner.run(tasksetArgv(tid, cpus));
}

/** The CPUs of a kernel CPU list (`0-3,8,10-11`: `/sys/devices/system/cpu/online`, `Cpus_allowed_list`). */
export function parseCpuList(text: string): number[] {
  const out: number[] = [];
  const t = text.trim();
  if (!t) return out;
  for (const part of t.split(',')) {
    const m = /^(\d{1,4})(?:-(\d{1,4}))?$/.exec(part);
    if (!m) throw new InvalidRequestError(`invalid CPU list ${JSON.stringify(text.slice(0, 64))}`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from || to > CPU_MAX) throw new InvalidRequestError(`invalid CPU range ${part}`);
    for (let c = from; c <= to; c++) out.push(c);
  }
  return out;
}
