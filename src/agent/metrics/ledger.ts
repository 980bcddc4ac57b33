// CPU seconds of a changing set of processes as one counter that never goes back. Each process's ticks include those
// of its children it waited for (cutime + cstime), so a process that exits is either folded into its parent's by the
// kernel (its parent is in the set: nothing to do) or would be lost from the sum (its parent is not: its last ticks
// are kept here). The first sample counts every process's whole life so far. The total never goes back.

/** One process as a sample saw it. */
export interface ProcessTicks {
  pid: number;
  /** Start time (clock ticks since boot): a pid reused by a later process is another process. */
  startTime: number;
  ppid: number;
  /** Its own CPU ticks plus its waited-for children's. */
  ticks: number;
}

/** The running total of a process set's CPU ticks across samples (one agent's lifetime). */
export class ProcessCpuLedger {
  private live = new Map<string, ProcessTicks>();
  private departed = 0;
  private last = 0;

  /** Takes the processes alive now; returns the total ticks of every process seen so far, alive or gone. */
  update(now: readonly ProcessTicks[]): number {
    const next = new Map(now.map((p) => [key(p), p]));
    const alive = new Set(now.map((p) => p.pid));
    for (const [k, p] of this.live) if (!next.has(k) && !alive.has(p.ppid)) this.departed += p.ticks;
    this.live = next;
    let total = this.departed;
    for (const p of now) total += p.ticks;
    // A parent that does not wait for its children (SIGCHLD ignored) never gets their ticks: hold the total.
    this.last = Math.max(this.last, total);
    return this.last;
  }
}

const key = (p: ProcessTicks) => `${p.pid}:${p.startTime}`;
