// The scheduler: which host a VM goes to when nothing names one (apply, for VMs the spec places nowhere), and
// admission control (after N host failures, would every protected VM find room?). The HA engine
// (controller/ha/decide.ts) chooses restart targets with the same rules (`chooseHost`). Pure and deterministic.
//
// The rules, everywhere:
// - memory: a host's room is its capacity less HOST_MEMORY_RESERVE_MIB (as admission's checkCapacity counts it)
//   less the memory of the VMs that will run there; a VM fits when its memory fits in what is left;
// - CPUs: one VM has at most the host's CPUs, and the VMs there at most CPU_OVERCOMMIT times the host's CPUs
//   (vCPUs mostly idle; memory cannot be overcommitted without swapping, so memory is the hard limit);
// - a VM's `ha.hosts` limits where it may go; `ha.group` keeps VMs of one group on distinct hosts;
// - among the hosts that fit: the most free memory, then the most free vCPUs, then the earliest (spec order).
import type { HaDecision } from '../shared/cluster.js';
import type { SpecIssue } from '../shared/errors.js';
import { HOST_MEMORY_RESERVE_MIB, type HostCapacity } from '../spec/admission.js';
import type { PlacedVm, Placement } from '../spec/placement.js';
import type { UnplacedSpec, UnplacedVmSpec } from '../spec/schema.js';

/** vCPUs the VMs of a host may add up to, per host CPU. */
export const CPU_OVERCOMMIT = 4;
/** Admission checks every set of N failing hosts up to this many sets; beyond, the N hosts with most HA memory. */
export const ADMISSION_SETS_MAX = 1000;

// ---------------------------------------------------------------------------------------------------------------
// Rooms: what a host holds, and the choice of a host for one VM.

/** A host as placement counts it: its capacity (undefined: unknown) and what is committed there. */
export interface Room {
  name: string;
  capacity: HostCapacity | undefined;
  /** Memory (MiB) of the VMs that will run there. */
  memoryMiB: number;
  /** vCPUs of the VMs that will run there. */
  cpus: number;
  /** Anti-affinity group -> a VM of it owned there. */
  groups: Map<string, string>;
}

/** A VM to place, as the rules see it. */
export interface Candidate {
  name: string;
  cpus: number;
  memoryMiB: number;
  /** `ha.group`. */
  group?: string | undefined;
  /** `ha.hosts` (undefined: any). */
  hosts?: readonly string[] | undefined;
  /** It will run there (false: a stopped VM whose owner only moves: it takes no memory or CPU). */
  needsRoom: boolean;
}

/** Why a host cannot take a VM. `failed`, `young-lease`, `flapping` and `group` may pass; memory and CPUs wait. */
export type BlockCode =
  | 'failed'
  | 'maintenance'
  | 'young-lease'
  | 'flapping'
  | 'group'
  | 'memory'
  | 'cpus'
  | 'unknown-capacity';

/** One host that cannot take a VM, and why in words. */
export interface Block {
  host: string;
  code: BlockCode;
  text: string;
  /** `memory`: how much memory is free there (MiB). */
  freeMiB?: number;
}

/** A fresh room. */
export function emptyRoom(name: string, capacity: HostCapacity | undefined): Room {
  return { name, capacity, memoryMiB: 0, cpus: 0, groups: new Map() };
}

/** Memory still free on a room (MiB; undefined when its capacity is unknown). */
export function freeMemory(room: Room): number | undefined {
  return room.capacity ? room.capacity.memoryMiB - HOST_MEMORY_RESERVE_MIB - room.memoryMiB : undefined;
}

/** vCPUs still free on a room under the overcommit rule (undefined when its capacity is unknown). */
export function freeCpus(room: Room): number | undefined {
  return room.capacity ? room.capacity.cpus * CPU_OVERCOMMIT - room.cpus : undefined;
}

/** Records `vm` on `room`. */
export function commit(room: Room, vm: Candidate): void {
  if (vm.needsRoom) {
    room.memoryMiB += vm.memoryMiB;
    room.cpus += vm.cpus;
  }
  if (vm.group && !room.groups.has(vm.group)) room.groups.set(vm.group, vm.name);
}

/**
 * Why `room` cannot take `vm` by the rules (group, memory, CPUs), or undefined when it can. A room of unknown
 * capacity fits when `unknownFits` (the scheduler without reports) and is blocked otherwise (admission).
 */
export function misfit(vm: Candidate, room: Room, unknownFits: boolean): Block | undefined {
  const holder = vm.group ? room.groups.get(vm.group) : undefined;
  if (holder !== undefined && holder !== vm.name)
    return { host: room.name, code: 'group', text: `holds ${holder} of group ${vm.group}` };
  if (!vm.needsRoom) return undefined;
  const cap = room.capacity;
  if (!cap)
    return unknownFits
      ? undefined
      : {
          host: room.name,
          code: 'unknown-capacity',
          text: 'capacity unknown (no report, no hosts[].capacity)',
        };
  const free = freeMemory(room)!;
  if (vm.memoryMiB > free)
    return {
      host: room.name,
      code: 'memory',
      text: `${Math.max(free, 0)} MiB free, needs ${vm.memoryMiB}`,
      freeMiB: Math.max(free, 0),
    };
  if (vm.cpus > cap.cpus)
    return { host: room.name, code: 'cpus', text: `${cap.cpus} CPUs, needs ${vm.cpus}` };
  if (vm.cpus > freeCpus(room)!)
    return {
      host: room.name,
      code: 'cpus',
      text: `${room.cpus} vCPUs on ${cap.cpus} CPUs already (at most ${CPU_OVERCOMMIT}x), needs ${vm.cpus} more`,
    };
  return undefined;
}

/** The outcome of `chooseHost`: a room, or every host the VM may use with why it cannot. */
export type Choice = { room: Room } | { blocks: Block[] };

/**
 * Chooses a room for `vm` among `rooms` (in tie-break order): hosts outside its `ha.hosts` are not considered, hosts
 * in `unavailable` are blocked by that, the rest by `misfit`. The best fit has the most free memory, then the most
 * free vCPUs; rooms of unknown capacity come after every known one, least committed memory first.
 */
export function chooseHost(
  vm: Candidate,
  rooms: readonly Room[],
  unavailable: ReadonlyMap<string, Block>,
  unknownFits: boolean,
): Choice {
  const blocks: Block[] = [];
  const fitting: Room[] = [];
  for (const room of rooms) {
    if (vm.hosts && !vm.hosts.includes(room.name)) continue;
    const block = unavailable.get(room.name) ?? misfit(vm, room, unknownFits);
    if (block) blocks.push(block);
    else fitting.push(room);
  }
  if (!fitting.length) return { blocks };
  const score = (r: Room): [number, number, number] => {
    const mem = freeMemory(r);
    return mem === undefined ? [0, -r.memoryMiB, 0] : [1, mem, freeCpus(r)!];
  };
  let best = fitting[0]!;
  let bestScore = score(best);
  for (const room of fitting.slice(1)) {
    const s = score(room);
    if (
      s[0] > bestScore[0] ||
      (s[0] === bestScore[0] && (s[1] > bestScore[1] || (s[1] === bestScore[1] && s[2] > bestScore[2])))
    ) {
      best = room;
      bestScore = s;
    }
  }
  return { room: best };
}

/**
 * `wait` when a block may pass by itself or needs another VM to move (a lease too young, a flapping host, a group
 * member there) or when every host it may use is failed or there is none (it waits for one to come back); else
 * `no-capacity`.
 */
export function blockedKind(blocks: readonly Block[]): 'wait' | 'no-capacity' {
  const passing = (b: Block) => b.code === 'young-lease' || b.code === 'flapping' || b.code === 'group';
  return blocks.some(passing) || blocks.every((b) => b.code === 'failed') ? 'wait' : 'no-capacity';
}

/** Blocks in words: `host1: 200 MiB free, needs 512; host3: in maintenance` (or that no host may take it). */
export function describeBlocks(blocks: readonly Block[]): string {
  return blocks.length ? blocks.map((b) => `${b.host}: ${b.text}`).join('; ') : 'no other host it may run on';
}

/** How a chosen room looks after taking `vm`: `2816 MiB free after it, 3/16 vCPUs`. */
export function describeRoom(room: Room): string {
  const mem = freeMemory(room);
  if (mem === undefined) return `capacity unknown, ${room.memoryMiB} MiB placed there`;
  return `${mem} MiB free after it, ${room.cpus}/${room.capacity!.cpus * CPU_OVERCOMMIT} vCPUs`;
}

/** A spec VM as a candidate. It takes room when it will run: desired running and HA does not keep it stopped. */
export function specCandidate(vm: UnplacedVmSpec): Candidate {
  return {
    name: vm.name,
    cpus: vm.cpus,
    memoryMiB: vm.memoryMiB,
    group: vm.ha?.group,
    hosts: vm.ha?.hosts,
    needsRoom: vm.state === 'running' && vm.ha?.state !== 'stopped',
  };
}

/** How many hosts `ha.hosts` allows (Infinity: any), for most-constrained-first ordering. */
export function allowedCount(hosts: readonly string[] | undefined): number {
  return hosts ? hosts.length : Number.POSITIVE_INFINITY;
}

/**
 * Higher `ha.priority` first; among equals, the VM with fewer allowed hosts first (so a VM that may use only one
 * host is not crowded out of it by one that could go elsewhere), then the order given.
 */
function byPriority<T extends { vm: UnplacedVmSpec; index: number }>(a: T, b: T): number {
  return (
    (b.vm.ha?.priority ?? 0) - (a.vm.ha?.priority ?? 0) ||
    allowedCount(a.vm.ha?.hosts) - allowedCount(b.vm.ha?.hosts) ||
    a.index - b.index
  );
}

// ---------------------------------------------------------------------------------------------------------------
// scheduleVms: placement of the VMs a spec places nowhere.

/** A host as the scheduler sees it. */
export interface ScheduleHost {
  name: string;
  /** What VMs may use there (an agent's report); the spec's `hosts[].capacity` wins. Absent with neither: unknown. */
  capacity?: HostCapacity | undefined;
  /** Memory used there by things not in `placed` (MiB; default 0): the scheduler counts placed VMs itself. */
  usedMemoryMiB?: number | undefined;
  /** vCPUs used there by things not in `placed` (default 0). */
  usedCpus?: number | undefined;
  /** Its lease exists (a failed host is never chosen). */
  live: boolean;
  /** In maintenance (never chosen). */
  maintenance: boolean;
}

/** What the scheduler places from. */
export interface ScheduleInput {
  spec: UnplacedSpec;
  /** Where VMs already are (owner records): these count on their hosts and are not moved. */
  placed: Placement;
  hosts: readonly ScheduleHost[];
  /** `at` of the decisions (default 0). */
  now?: number;
}

/** What the scheduler decided. */
export interface ScheduleResult {
  /** The VMs it placed now (source `scheduler`), not those of `placed`. */
  placement: Record<string, PlacedVm>;
  /** `place` for each VM placed (why that host), `no-capacity` or `wait` for each it could not place. */
  decisions: HaDecision[];
  /** One per VM it could not place (path `vms[i].host`): apply refuses the spec with them. */
  issues: SpecIssue[];
}

/**
 * Places every VM of `spec` that neither `placed` nor the spec's `host` places, in priority order (then spec order),
 * each on the best host by the rules above, so that two VMs never both take the last room. Compute hosts of the spec
 * missing from `hosts` count as live, not in maintenance, with the spec's capacity or an unknown one.
 */
export function scheduleVms(input: ScheduleInput): ScheduleResult {
  const { spec, placed } = input;
  const at = input.now ?? 0;
  const info = new Map(input.hosts.map((h) => [h.name, h] as const));
  const rooms: Room[] = [];
  const unavailable = new Map<string, Block>();
  for (const h of spec.hosts) {
    if (h.role === 'storage') continue;
    const i = info.get(h.name);
    const room = emptyRoom(h.name, h.capacity ?? i?.capacity);
    room.memoryMiB = i?.usedMemoryMiB ?? 0;
    room.cpus = i?.usedCpus ?? 0;
    rooms.push(room);
    if (i && !i.live) unavailable.set(h.name, { host: h.name, code: 'failed', text: 'failed (no lease)' });
    else if (i?.maintenance)
      unavailable.set(h.name, { host: h.name, code: 'maintenance', text: 'in maintenance' });
  }
  const roomOf = new Map(rooms.map((r) => [r.name, r] as const));
  const todo: Array<{ vm: UnplacedVmSpec; index: number }> = [];
  spec.vms.forEach((vm, index) => {
    const host = placed[vm.name]?.host ?? vm.host;
    if (host === undefined) todo.push({ vm, index });
    else {
      const room = roomOf.get(host);
      if (room) commit(room, specCandidate(vm));
    }
  });
  todo.sort(byPriority);
  const result: ScheduleResult = { placement: {}, decisions: [], issues: [] };
  for (const { vm, index } of todo) {
    const c = specCandidate(vm);
    const choice = chooseHost(c, rooms, unavailable, true);
    if ('room' in choice) {
      commit(choice.room, c);
      result.placement[vm.name] = { host: choice.room.name, source: 'scheduler' };
      result.decisions.push({
        kind: 'place',
        at,
        vm: vm.name,
        to: choice.room.name,
        reason: `the spec names no host: ${choice.room.name} has the most room (${describeRoom(choice.room)})`,
      });
    } else {
      const why = describeBlocks(choice.blocks);
      result.decisions.push({
        kind: blockedKind(choice.blocks),
        at,
        vm: vm.name,
        reason: `no host can take it: ${why}`,
      });
      result.issues.push({
        path: `vms[${index}].host`,
        message: `VM "${vm.name}" (${vm.memoryMiB} MiB, ${vm.cpus} CPUs) names no host and no host can take it: ${why}; give it a host, free room or add a host`,
      });
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// Admission control.

/** The number of ways to choose k of n, or `cap + 1` once it passes `cap`. */
function combinationsUpTo(n: number, k: number, cap: number): number {
  let c = 1;
  for (let i = 1; i <= k; i++) {
    c = (c * (n - k + i)) / i;
    if (c > cap) return cap + 1;
  }
  return Math.round(c);
}

/** Every k-subset of `items` in lexicographic order. */
function* subsets<T>(items: readonly T[], k: number, start = 0, acc: T[] = []): Generator<T[]> {
  if (acc.length === k) {
    yield [...acc];
    return;
  }
  for (let i = start; i <= items.length - (k - acc.length); i++) {
    acc.push(items[i]!);
    yield* subsets(items, k, i + 1, acc);
    acc.pop();
  }
}

/**
 * Admission control: with `hostFailures` = N (default `cluster.admission.hostFailures`), every set of N compute hosts
 * failing must leave room on the others to restart each of their `started` HA VMs (running ones), by the rules above
 * and in priority order. Every set is tried while there are at most ADMISSION_SETS_MAX of them; beyond, only the N
 * hosts holding the most HA memory (the heaviest loss, not a proof: said in the message). Capacities are the spec's
 * `hosts[].capacity`, else `capacities` (agent reports); a surviving host of unknown capacity counts as no room.
 * Returns one issue per VM that would not restart (path `vms[i]`), naming the failed hosts and the shortfall.
 */
export function admissionIssues(
  spec: UnplacedSpec,
  placement: Placement,
  capacities: Readonly<Record<string, HostCapacity>>,
  hostFailures: number = spec.cluster?.admission.hostFailures ?? 0,
): SpecIssue[] {
  if (hostFailures <= 0) return [];
  const compute = spec.hosts.filter((h) => h.role !== 'storage');
  const names = compute.map((h) => h.name);
  const hostOf = (vm: UnplacedVmSpec): string | undefined => placement[vm.name]?.host ?? vm.host;
  const isProtected = (vm: UnplacedVmSpec) => vm.ha?.state === 'started' && vm.state === 'running';
  if (hostFailures >= names.length) {
    if (!spec.vms.some(isProtected)) return [];
    return [
      {
        path: 'cluster.admission.hostFailures',
        message: `${hostFailures} host failure(s) would leave none of the ${names.length} compute host(s) to restart HA VMs on; lower it or add hosts`,
      },
    ];
  }
  let sets: Iterable<string[]>;
  let heuristic = false;
  if (combinationsUpTo(names.length, hostFailures, ADMISSION_SETS_MAX) <= ADMISSION_SETS_MAX)
    sets = subsets(names, hostFailures);
  else {
    heuristic = true;
    const haMemory = new Map<string, number>(names.map((n) => [n, 0]));
    for (const vm of spec.vms) {
      const h = hostOf(vm);
      if (h !== undefined && isProtected(vm) && haMemory.has(h))
        haMemory.set(h, haMemory.get(h)! + vm.memoryMiB);
    }
    const heaviest = names
      .map((n, i) => ({ n, i, m: haMemory.get(n)! }))
      .sort((a, b) => b.m - a.m || a.i - b.i)
      .slice(0, hostFailures)
      .map((x) => x.n);
    sets = [heaviest];
  }
  const capOf = new Map(compute.map((h) => [h.name, h.capacity ?? capacities[h.name]] as const));
  const issues: SpecIssue[] = [];
  const reported = new Set<string>();
  for (const failed of sets) {
    const down = new Set(failed);
    const rooms = names.filter((n) => !down.has(n)).map((n) => emptyRoom(n, capOf.get(n)));
    const roomOf = new Map(rooms.map((r) => [r.name, r] as const));
    const victims: Array<{ vm: UnplacedVmSpec; index: number }> = [];
    spec.vms.forEach((vm, index) => {
      const h = hostOf(vm);
      if (h === undefined) return;
      const room = roomOf.get(h);
      if (room) commit(room, specCandidate(vm));
      else if (down.has(h) && isProtected(vm)) victims.push({ vm, index });
    });
    victims.sort(byPriority);
    for (const { vm, index } of victims) {
      const c = specCandidate(vm);
      const choice = chooseHost(c, rooms, new Map(), false);
      if ('room' in choice) {
        commit(choice.room, c);
        continue;
      }
      if (reported.has(vm.name)) continue;
      reported.add(vm.name);
      const mem = choice.blocks.filter((b) => b.code === 'memory');
      const best = Math.max(-1, ...mem.map((b) => b.freeMiB ?? 0));
      const short = best >= 0 ? `; short by ${vm.memoryMiB - best} MiB on the roomiest host` : '';
      const which = heuristic
        ? `the ${hostFailures} host(s) with the most HA memory (${failed.join(', ')}) failed (too many host sets to try each)`
        : `${failed.join(', ')} failed`;
      issues.push({
        path: `vms[${index}]`,
        message: `admission (cluster.admission.hostFailures: ${hostFailures}): HA VM "${vm.name}" (${vm.memoryMiB} MiB, ${vm.cpus} CPUs, priority ${vm.ha?.priority ?? 0}) could not restart if ${which}: ${describeBlocks(choice.blocks)}${short}; add capacity, lower its memory or the setting`,
      });
    }
  }
  return issues;
}
