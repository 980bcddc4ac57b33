// The balancer's planner (DRS-style): from the hosts' measured load and the VMs on them to an ordered list of live
// migrations that bring the spread of host CPU and memory use (max - min, in percentage points) within a threshold.
// Pure and deterministic (names sort every tie), so golden plans (plan.test.ts) pin its choices and the fleet bench
// times it on 1,000 hosts.
//
// Rules of a move (the scheduler's, plan/scheduler.ts, plus the balancer's own):
// - only movable VMs move: a VM with a reason in `pinned` (CPU pinning, a passthrough device, ...) stays;
// - the target is in its `ha.hosts`, holds no other VM of its `ha.group`, and has room by the scheduler's rules
//   (configured memory under capacity less the reserve, vCPUs under the overcommit);
// - a move must lower the excess over the threshold, and may raise the other dimension's spread only while that
//   stays within the threshold: so a plan never worsens a spread that was out of bounds and never pushes one out;
// - greedy with a one-move look-ahead: a move that balances at once wins; else, among the best few, the one whose
//   best follow-up leaves the least excess (fewest moves first), then the least squared deviation, then names (past
//   BALANCE_LOOKAHEAD_HOSTS_MAX hosts plain greedy). Where many hosts share the top, no single move lowers the spread:
//   a move then counts when it lowers the squared deviation from the mean, so the plateau is worked down host by host.
// Affinity (VMs kept together) is not a rule here: moving a VM together with its partners would be one multi-VM
// move; the spec has no affinity rules yet (docs/mobility.md).
import { commit, emptyRoom, misfit, type Room } from '../../plan/scheduler.js';
import type { HostCapacity } from '../../spec/admission.js';

/** Default `cluster.balanceThreshold`: max - min host CPU and memory within 10 points (the issue's seed figure). */
export const BALANCE_THRESHOLD_DEFAULT = 10;
/** Most moves one plan proposes (an apply runs them one by one; the next plan sees their effect). */
export const BALANCE_MOVES_MAX = 32;
/** A move must lower the excess by at least this many points (no churn for crumbs)... */
export const BALANCE_MIN_GAIN = 0.5;
/**
 * ...or, when many hosts share the top (a plateau no single move lowers), the out-of-bounds dimensions' squared
 * deviation from their mean (sum over hosts, points^2) by at least this much.
 */
export const BALANCE_MIN_DEVIATION_GAIN = 1;
/** How many of the busiest and of the idlest hosts per dimension a step considers (bounds a step on big fleets). */
export const BALANCE_HOSTS_CONSIDERED = 8;
/** How many of a step's best moves get a look-ahead. */
export const BALANCE_LOOKAHEAD = 4;
/**
 * Largest cluster planned with the look-ahead; beyond, plain greedy: one move of one VM barely shifts a big fleet's
 * extremes, so the look-ahead rarely changes the choice there and would multiply a step's time by five.
 */
export const BALANCE_LOOKAHEAD_HOSTS_MAX = 64;

/** A host as the balancer sees it: its size and what it uses now (every process, VMs included). */
export interface BalanceHost {
  name: string;
  /** The host's CPUs. */
  cpus: number;
  /** The host's memory (MiB). */
  memoryMiB: number;
  /** CPUs busy now (utilization x cpus). */
  cpuBusy: number;
  /** Memory used now (MiB). */
  memoryUsedMiB: number;
  /** What VMs may use there (the spec's `capacity`, else the report); default its cpus and memory. */
  capacity?: HostCapacity | undefined;
}

/** A running VM as the balancer sees it. */
export interface BalanceVm {
  name: string;
  host: string;
  /** Configured vCPUs and memory (what placement counts). */
  cpus: number;
  memoryMiB: number;
  /** CPUs it uses now (1 = one CPU busy). */
  cpuBusy: number;
  /** Memory it uses now (its QEMU's RSS, MiB); default `memoryMiB`. */
  memoryUsedMiB?: number | undefined;
  /** `ha.hosts` (undefined: any). */
  hosts?: readonly string[] | undefined;
  /** `ha.group`: never two of a group on one host. */
  group?: string | undefined;
  /** Why it must stay where it is (absent: movable). */
  pinned?: string | undefined;
}

/** What one plan is made from. */
export interface BalanceInput {
  /** Hosts that may give and take VMs (failed and maintenance hosts are left out by the caller). */
  hosts: readonly BalanceHost[];
  /** Running VMs; those on hosts not in `hosts` are ignored. */
  vms: readonly BalanceVm[];
  /** Max - min allowed per dimension, in points (default BALANCE_THRESHOLD_DEFAULT). */
  thresholdPoints?: number | undefined;
  /** Default BALANCE_MOVES_MAX. */
  maxMoves?: number | undefined;
}

/** The spreads of a state, in percentage points. */
export interface Spread {
  cpu: number;
  memory: number;
}

/** A host's use in percent. */
export interface HostLoad {
  host: string;
  cpuPercent: number;
  memoryPercent: number;
}

/** One proposed live migration and why. */
export interface BalanceMove {
  vm: string;
  from: string;
  to: string;
  /** In words: which spread it narrows, the hosts' figures before and after. */
  reason: string;
  /** The spreads once this move (and those before it) ran. */
  after: Spread;
}

/** The planner's answer. */
export interface BalancePlan {
  thresholdPoints: number;
  before: { spread: Spread; hosts: HostLoad[] };
  after: { spread: Spread; hosts: HostLoad[] };
  moves: BalanceMove[];
  /** Both spreads within the threshold after the moves. */
  balanced: boolean;
  /** Why it stopped where it did, VMs it could not move and why (in words). */
  notes: string[];
}

/** Working state of one host. */
interface HostState {
  h: BalanceHost;
  cpuBusy: number;
  memUsed: number;
  room: Room;
  vms: BalanceVm[];
}

const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
const round1 = (x: number) => Math.round(x * 10) / 10;

function cpuPct(s: HostState, busy = s.cpuBusy): number {
  return (Math.max(0, busy) / s.h.cpus) * 100;
}
function memPct(s: HostState, used = s.memUsed): number {
  return (Math.max(0, used) / s.h.memoryMiB) * 100;
}

/** The `k` lowest of `states` by `value` (ties by name), ascending: a partial selection, O(n k) not a sort. */
function lowest(
  states: readonly HostState[],
  value: ReadonlyMap<HostState, number>,
  k: number,
  sign: 1 | -1,
): HostState[] {
  const out: HostState[] = [];
  const before = (a: HostState, b: HostState) => {
    const d = sign * (value.get(a)! - value.get(b)!);
    return d < 0 || (d === 0 && byName(a.h, b.h) < 0);
  };
  for (const s of states) {
    if (out.length === k && !before(s, out[k - 1]!)) continue;
    let i = out.length === k ? k - 1 : out.length;
    while (i > 0 && before(s, out[i - 1]!)) {
      out[i] = out[i - 1]!;
      i--;
    }
    out[i] = s;
    if (out.length > k) out.length = k;
  }
  return out;
}

/** Max - min of `values`, with `a` and `b` given new values (the hosts of a move); `low`/`high`: the extremes. */
function spreadWith(
  values: ReadonlyMap<HostState, number>,
  low: readonly HostState[],
  high: readonly HostState[],
  a: HostState,
  av: number,
  b: HostState,
  bv: number,
): number {
  // The extremes other than a and b are within the first three of each list.
  let lo = Math.min(av, bv);
  let hi = Math.max(av, bv);
  const lowOther = low.find((s) => s !== a && s !== b);
  const highOther = high.find((s) => s !== a && s !== b);
  if (lowOther) lo = Math.min(lo, values.get(lowOther)!);
  if (highOther) hi = Math.max(hi, values.get(highOther)!);
  return hi - lo;
}

/** A move under consideration. */
interface Candidate {
  vm: BalanceVm;
  from: HostState;
  to: HostState;
  spread: Spread;
  excess: number;
  /** Squared deviation of the out-of-bounds dimensions after the move. */
  deviation: number;
}

/** Sum of squared deviations from the mean of values whose sum is s1 and sum of squares s2 (n of them). */
function deviationOf(s1: number, s2: number, n: number): number {
  return Math.max(0, s2 - (s1 * s1) / n);
}

function excessOf(s: Spread, t: number): number {
  return Math.max(0, s.cpu - t) + Math.max(0, s.memory - t);
}

function vmMem(vm: BalanceVm): number {
  return vm.memoryUsedMiB ?? vm.memoryMiB;
}

/** The scheduler's view of a VM (configured size, group) for the room rules. */
function schedCandidate(vm: BalanceVm) {
  return { name: vm.name, cpus: vm.cpus, memoryMiB: vm.memoryMiB, group: vm.group, needsRoom: true };
}

class Planner {
  readonly states: HostState[];
  private readonly byHost: Map<string, HostState>;

  constructor(
    input: BalanceInput,
    readonly t: number,
  ) {
    this.states = [...input.hosts].sort(byName).map((h) => ({
      h,
      cpuBusy: h.cpuBusy,
      memUsed: h.memoryUsedMiB,
      room: emptyRoom(h.name, h.capacity ?? { cpus: h.cpus, memoryMiB: h.memoryMiB }),
      vms: [],
    }));
    this.byHost = new Map(this.states.map((s) => [s.h.name, s] as const));
    for (const vm of [...input.vms].sort(byName)) {
      const s = this.byHost.get(vm.host);
      if (!s) continue;
      s.vms.push(vm);
      commit(s.room, schedCandidate(vm));
    }
  }

  spread(): Spread {
    if (!this.states.length) return { cpu: 0, memory: 0 };
    const c = this.states.map((s) => cpuPct(s));
    const m = this.states.map((s) => memPct(s));
    return { cpu: Math.max(...c) - Math.min(...c), memory: Math.max(...m) - Math.min(...m) };
  }

  loads(): HostLoad[] {
    return this.states.map((s) => ({
      host: s.h.name,
      cpuPercent: round1(cpuPct(s)),
      memoryPercent: round1(memPct(s)),
    }));
  }

  /** Why `vm` cannot go to `to` (undefined: it can). */
  blocked(vm: BalanceVm, to: HostState): string | undefined {
    if (vm.hosts && !vm.hosts.includes(to.h.name)) return `ha.hosts excludes ${to.h.name}`;
    const m = misfit(schedCandidate(vm), to.room, false);
    return m ? `${to.h.name} ${m.text}` : undefined;
  }

  /** Every allowed move between the busiest and idlest hosts, best first. */
  candidates(current: Spread): Candidate[] {
    const n = this.states.length;
    const cpuV = new Map(this.states.map((s) => [s, cpuPct(s)] as const));
    const memV = new Map(this.states.map((s) => [s, memPct(s)] as const));
    const k = Math.min(BALANCE_HOSTS_CONSIDERED, n);
    // Two more than considered: the extremes besides a move's two hosts.
    const cpuLow = lowest(this.states, cpuV, k + 2, 1);
    const cpuHigh = lowest(this.states, cpuV, k + 2, -1);
    const memLow = lowest(this.states, memV, k + 2, 1);
    const memHigh = lowest(this.states, memV, k + 2, -1);
    const sources = new Set<HostState>();
    const targets = new Set<HostState>();
    const over = (d: 'cpu' | 'memory') => current[d] > this.t;
    for (const [d, low, high] of [
      ['cpu', cpuLow, cpuHigh],
      ['memory', memLow, memHigh],
    ] as const) {
      if (!over(d)) continue;
      for (let i = 0; i < k; i++) {
        sources.add(high[i]!);
        targets.add(low[i]!);
      }
    }
    const out: Candidate[] = [];
    const before = excessOf(current, this.t);
    const sums = (v: ReadonlyMap<HostState, number>) => {
      let s1 = 0;
      let s2 = 0;
      for (const x of v.values()) {
        s1 += x;
        s2 += x * x;
      }
      return { s1, s2 };
    };
    const cs = sums(cpuV);
    const ms = sums(memV);
    const devNow =
      (over('cpu') ? deviationOf(cs.s1, cs.s2, n) : 0) + (over('memory') ? deviationOf(ms.s1, ms.s2, n) : 0);
    const devAfter = (
      v: ReadonlyMap<HostState, number>,
      sm: { s1: number; s2: number },
      a: HostState,
      av: number,
      b: HostState,
      bv: number,
    ) => {
      const a0 = v.get(a)!;
      const b0 = v.get(b)!;
      return deviationOf(sm.s1 - a0 - b0 + av + bv, sm.s2 - a0 * a0 - b0 * b0 + av * av + bv * bv, n);
    };
    for (const from of sources) {
      for (const vm of from.vms) {
        if (vm.pinned) continue;
        for (const to of targets) {
          if (to === from || this.blocked(vm, to)) continue;
          const cpuFrom = cpuPct(from, from.cpuBusy - vm.cpuBusy);
          const cpuTo = cpuPct(to, to.cpuBusy + vm.cpuBusy);
          const memFrom = memPct(from, from.memUsed - vmMem(vm));
          const memTo = memPct(to, to.memUsed + vmMem(vm));
          const spread: Spread = {
            cpu: spreadWith(cpuV, cpuLow, cpuHigh, from, cpuFrom, to, cpuTo),
            memory: spreadWith(memV, memLow, memHigh, from, memFrom, to, memTo),
          };
          // Never worsen a dimension out of bounds, never push one out of bounds.
          if (spread.cpu > Math.max(current.cpu, this.t) + 1e-9) continue;
          if (spread.memory > Math.max(current.memory, this.t) + 1e-9) continue;
          const excess = excessOf(spread, this.t);
          if (excess > before + 1e-9) continue;
          const deviation =
            (over('cpu') ? devAfter(cpuV, cs, from, cpuFrom, to, cpuTo) : 0) +
            (over('memory') ? devAfter(memV, ms, from, memFrom, to, memTo) : 0);
          if (before - excess < BALANCE_MIN_GAIN && devNow - deviation < BALANCE_MIN_DEVIATION_GAIN) continue;
          out.push({ vm, from, to, spread, excess, deviation });
        }
      }
    }
    return out.sort(
      (a, b) =>
        a.excess - b.excess || a.deviation - b.deviation || byName(a.vm, b.vm) || byName(a.to.h, b.to.h),
    );
  }

  apply(c: Candidate): void {
    c.from.cpuBusy -= c.vm.cpuBusy;
    c.from.memUsed -= vmMem(c.vm);
    c.to.cpuBusy += c.vm.cpuBusy;
    c.to.memUsed += vmMem(c.vm);
    c.from.vms = c.from.vms.filter((v) => v !== c.vm);
    c.to.vms.push(c.vm);
    c.to.vms.sort(byName);
    const s = schedCandidate(c.vm);
    c.from.room.memoryMiB -= s.memoryMiB;
    c.from.room.cpus -= s.cpus;
    if (c.vm.group && c.from.room.groups.get(c.vm.group) === c.vm.name) c.from.room.groups.delete(c.vm.group);
    commit(c.to.room, s);
  }

  undo(c: Candidate): void {
    this.apply({ ...c, from: c.to, to: c.from });
  }

  /** The least excess the best single follow-up move reaches after `c` (its own excess when none helps). */
  lookahead(c: Candidate): number {
    this.apply(c);
    const next = this.candidates(c.spread)[0];
    this.undo(c);
    return next ? next.excess : c.excess;
  }

  /** The move to make now, or undefined when none helps. */
  choose(current: Spread): Candidate | undefined {
    const cands = this.candidates(current);
    if (!cands.length) return undefined;
    if (cands[0]!.excess === 0 || this.states.length > BALANCE_LOOKAHEAD_HOSTS_MAX) return cands[0];
    let best = cands[0]!;
    let bestAhead = Number.POSITIVE_INFINITY;
    for (const c of cands.slice(0, BALANCE_LOOKAHEAD)) {
      const ahead = this.lookahead(c);
      if (ahead < bestAhead - 1e-9) {
        best = c;
        bestAhead = ahead;
      }
    }
    return best;
  }

  /** Why nothing on the busiest host (per dimension out of bounds) can move, for the notes. */
  stuck(current: Spread): string[] {
    const notes: string[] = [];
    for (const d of ['cpu', 'memory'] as const) {
      if (current[d] <= this.t) continue;
      const pct = d === 'cpu' ? (s: HostState) => cpuPct(s) : (s: HostState) => memPct(s);
      const top = [...this.states].sort((a, b) => pct(b) - pct(a) || byName(a.h, b.h))[0]!;
      const why = top.vms.map((vm) => {
        if (vm.pinned) return `${vm.name} is pinned (${vm.pinned})`;
        const blocks = this.states
          .filter((s) => s !== top)
          .map((s) => this.blocked(vm, s))
          .filter((b) => b !== undefined);
        const open = this.states.length - 1 - blocks.length;
        const rest = open ? [`${blocks.length ? 'elsewhere ' : ''}no move narrows the spread`] : [];
        return `${vm.name}: ${[...blocks.slice(0, 3), ...(blocks.length > 3 ? [`${blocks.length - 3} more hosts blocked`] : []), ...rest].join('; ')}`;
      });
      notes.push(
        `${d === 'cpu' ? 'CPU' : 'memory'} spread stays ${round1(current[d])} points (> ${this.t}): the busiest host ${top.h.name} (${round1(pct(top))}%) ${why.length ? `has ${why.join('; ')}` : 'runs no VM'}`,
      );
    }
    return notes;
  }
}

function describe(c: Candidate, before: Spread, t: number): string {
  const dims: string[] = [];
  const f = (x: number) => `${round1(x)}%`;
  const cpuFrom = cpuPct(c.from);
  const cpuTo = cpuPct(c.to);
  const memFrom = memPct(c.from);
  const memTo = memPct(c.to);
  if (before.cpu > t || c.spread.cpu < before.cpu - 1e-9)
    dims.push(`CPU spread ${round1(before.cpu)} -> ${round1(c.spread.cpu)} points`);
  if (before.memory > t || c.spread.memory < before.memory - 1e-9)
    dims.push(`memory spread ${round1(before.memory)} -> ${round1(c.spread.memory)} points`);
  const size = `CPU load ${round1(c.vm.cpuBusy)}, ${Math.round(vmMem(c.vm))} MiB`;
  return (
    `${c.vm.name} (${size}) from ${c.from.h.name} (CPU ${f(cpuFrom)}, memory ${f(memFrom)}) to ${c.to.h.name} ` +
    `(CPU ${f(cpuTo)}, memory ${f(memTo)}): ${dims.join(', ')} (threshold ${t})`
  );
}

/**
 * Plans the migrations that bring host CPU and memory spreads within `thresholdPoints`, fewest moves first; see the
 * module comment for the rules. Figures in the plan are rounded to 0.1 point.
 */
export function planBalance(input: BalanceInput): BalancePlan {
  const t = input.thresholdPoints ?? BALANCE_THRESHOLD_DEFAULT;
  const maxMoves = input.maxMoves ?? BALANCE_MOVES_MAX;
  const p = new Planner(input, t);
  const spread0 = p.spread();
  const before = { spread: roundSpread(spread0), hosts: p.loads() };
  const moves: BalanceMove[] = [];
  const notes: string[] = [];
  let current = spread0;
  while (excessOf(current, t) > 0) {
    if (moves.length >= maxMoves) {
      notes.push(`stopped at ${maxMoves} moves (the next plan continues once these ran)`);
      break;
    }
    const c = p.choose(current);
    if (!c) {
      notes.push(...p.stuck(current));
      break;
    }
    // Describe with the hosts' figures before the move, then make it.
    const reason = describe(c, current, t);
    p.apply(c);
    current = p.spread();
    moves.push({ vm: c.vm.name, from: c.from.h.name, to: c.to.h.name, reason, after: roundSpread(current) });
  }
  const balanced = excessOf(current, t) === 0;
  if (balanced && !moves.length)
    notes.push(`balanced: CPU and memory spreads within ${t} points, nothing to move`);
  return {
    thresholdPoints: t,
    before,
    after: { spread: roundSpread(current), hosts: p.loads() },
    moves,
    balanced,
    notes,
  };
}

function roundSpread(s: Spread): Spread {
  return { cpu: round1(s.cpu), memory: round1(s.memory) };
}
