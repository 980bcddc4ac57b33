// The HA decision engine: one round from what the manager sees (hosts' leases, maintenance, owners, policies) to
// what it must do (assign a VM to another host, started or not) and why. Pure: the clock is an input, so tests replay
// failures with a fake clock against golden decision logs (decide.test.ts). The placement rules (room, ha.hosts,
// groups) are the scheduler's (plan/scheduler.ts).
//
// Per round:
// 1. Hosts: a live host is `up`; one whose lease is gone is `failed` (`host-failed`, once); a failed host live again is
//    `host-recovered`. A restart target must be up, not in maintenance, hold a lease at least TARGET_LEASE_MIN_AGE_MS
//    old (docs/ha.md, "etcd outage") and not be flapping (FLAP_FAILURES failures within FLAP_WINDOW_MS: not a target
//    until up FLAP_STABLE_MS).
// 2. VMs needing a host, failures first then maintenance, each by priority (higher first) then name, placed one by
//    one so that two never take the last room: owned by a failed host with policy `started` -> `restart`;
//    `stopped` -> `move` (owner only); stopped by a user -> `keep-stopped` (owner moves, nothing starts);
//    disabled or no policy -> `keep-stopped` (down with its host), said once. Owned by a live host in maintenance
//    with a policy -> `move` (the manager stops it there first). No target -> `wait` or `no-capacity`, said once
//    per VM per failure and retried every round.
// A round's actions change owners; the next round sees the new owners and decides nothing more for those VMs.

import {
  allowedCount,
  type Block,
  blockedKind,
  type Candidate,
  chooseHost,
  commit,
  describeBlocks,
  describeRoom,
  emptyRoom,
  type Room,
} from '../../plan/scheduler.js';
import { type HaDecision, TARGET_LEASE_MIN_AGE_MS } from '../../shared/cluster.js';
import type { DecideFn, HaAction, HaHostInput, HaMemory, HaVmInput } from './types.js';

/** A host that failed this many times within FLAP_WINDOW_MS is flapping. */
export const FLAP_FAILURES = 3;
/** The window in which failures count towards flapping. */
export const FLAP_WINDOW_MS = 10 * 60_000;
/** A flapping host is a restart target again once it has been up this long. */
export const FLAP_STABLE_MS = 2 * 60_000;

/** Seconds with one decimal: `12.5s`. */
function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

/** One decision as a log line: `t=12.5s restart web host2 -> host1: host2 failed; ...`. */
export function formatDecision(d: HaDecision): string {
  const t = typeof d.at === 'number' ? `t=${secs(d.at)}` : d.at;
  const subject = [d.vm, d.host].filter((x) => x !== undefined).join(' ');
  const move = d.from !== undefined || d.to !== undefined ? ` ${d.from ?? '(none)'} -> ${d.to ?? '?'}` : '';
  return `${t} ${d.kind}${subject ? ` ${subject}` : ''}${move}: ${d.reason}`;
}

/** Whether a host's failures make it flapping now. */
function flapping(failures: readonly number[]): boolean {
  return failures.length >= FLAP_FAILURES;
}

/** Why a VM needs a new host this round. */
type Need =
  | { why: 'failed'; vm: HaVmInput; owner: string; token: string; since: number | 'gone' }
  | { why: 'maintenance'; vm: HaVmInput; owner: string; token: string };

export const decide: DecideFn = (memory, inputs) => {
  const now = inputs.now;
  const decisions: HaDecision[] = [];
  const actions: HaAction[] = [];
  const hosts = [...inputs.hosts].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const vms = [...inputs.vms].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  // 1. Host states.
  const next: HaMemory = { hosts: {}, vms: {} };
  for (const h of hosts) {
    const prev = memory.hosts[h.name];
    const failures = (prev?.failures ?? []).filter((t) => now - t < FLAP_WINDOW_MS);
    if (h.live) {
      const since = now - (h.leaseAgeMs ?? 0);
      if (prev?.state === 'failed') {
        const damped = flapping(failures)
          ? `; it failed ${failures.length} times within ${FLAP_WINDOW_MS / 60_000} min: no restart target before t=${secs(since + FLAP_STABLE_MS)}`
          : '';
        decisions.push({
          kind: 'host-recovered',
          at: now,
          host: h.name,
          reason: `its lease is back after ${secs(now - prev.since)} failed${damped}`,
        });
        next.hosts[h.name] = { state: 'up', since, failures, seenAt: now };
      } else next.hosts[h.name] = { state: 'up', since: prev?.since ?? since, failures, seenAt: now };
    } else if (prev?.state === 'failed') {
      next.hosts[h.name] = { ...prev, failures };
    } else {
      failures.push(now);
      const seen = prev?.seenAt;
      decisions.push({
        kind: 'host-failed',
        at: now,
        host: h.name,
        reason:
          seen === undefined
            ? 'no lease since this controller became active'
            : `its lease ended (seen live ${secs(now - seen)} ago)`,
      });
      next.hosts[h.name] = {
        state: 'failed',
        since: now,
        failures,
        ...(seen === undefined ? {} : { seenAt: seen }),
      };
    }
  }

  // Rooms (every host, failed ones too, for the accounting) and hosts that cannot be targets.
  const byName = new Map<string, HaHostInput>(hosts.map((h) => [h.name, h] as const));
  const rooms: Room[] = hosts.map((h) => emptyRoom(h.name, h.capacity));
  const roomOf = new Map(rooms.map((r) => [r.name, r] as const));
  const candidate = (vm: HaVmInput, start: boolean): Candidate => ({
    name: vm.name,
    cpus: vm.cpus,
    memoryMiB: vm.memoryMiB,
    group: vm.policy?.group,
    hosts: vm.policy?.hosts,
    needsRoom: start,
  });
  const wouldRun = (vm: HaVmInput) => !vm.userStopped && vm.policy?.state !== 'stopped';
  for (const vm of vms) {
    const room = vm.owner ? roomOf.get(vm.owner.host) : undefined;
    if (room) commit(room, candidate(vm, wouldRun(vm)));
  }
  const unavailable = new Map<string, Block>();
  for (const h of hosts) {
    const mem = next.hosts[h.name]!;
    const age = h.leaseAgeMs ?? 0;
    let block: Block | undefined;
    if (!h.live) block = { host: h.name, code: 'failed', text: 'failed' };
    else if (h.maintenance) block = { host: h.name, code: 'maintenance', text: 'in maintenance' };
    else if (age < TARGET_LEASE_MIN_AGE_MS)
      block = {
        host: h.name,
        code: 'young-lease',
        text: `lease ${secs(age)} old, a target at ${secs(TARGET_LEASE_MIN_AGE_MS)}`,
      };
    else if (flapping(mem.failures) && now - mem.since < FLAP_STABLE_MS)
      block = {
        host: h.name,
        code: 'flapping',
        text: `flapping (${mem.failures.length} failures within ${FLAP_WINDOW_MS / 60_000} min), a target at t=${secs(mem.since + FLAP_STABLE_MS)}`,
      };
    if (block) unavailable.set(h.name, block);
  }

  // A standing decision (wait, no-capacity, keep-stopped) is said once until what it says changes.
  const sayOnce = (vm: string, signature: string, d: HaDecision) => {
    if (memory.vms?.[vm]?.said !== signature) decisions.push(d);
    next.vms![vm] = { said: signature };
  };

  // 2. VMs that need a host.
  const failedNeeds: Need[] = [];
  const maintenanceNeeds: Need[] = [];
  for (const vm of vms) {
    if (!vm.owner) continue;
    const owner = vm.owner.host;
    const host = byName.get(owner);
    const state = next.hosts[owner]?.state;
    const managed = vm.policy !== undefined && vm.policy.state !== 'disabled';
    if (!host || state === 'failed') {
      // A host the spec no longer has is "gone" for good: a stable epoch, so its decisions are said once.
      const since = next.hosts[owner]?.since ?? 'gone';
      if (managed) failedNeeds.push({ why: 'failed', vm, owner, token: vm.owner.token, since });
      else
        sayOnce(vm.name, `keep-stopped|${owner}|${vm.owner.token}|${since}`, {
          kind: 'keep-stopped',
          at: now,
          vm: vm.name,
          host: owner,
          reason: `HA is disabled for it: it stays down with ${host ? `failed host ${owner}` : `${owner}, no longer a host of the spec`}`,
        });
    } else if (host.maintenance) {
      if (managed) maintenanceNeeds.push({ why: 'maintenance', vm, owner, token: vm.owner.token });
      else
        sayOnce(vm.name, `wait|maintenance|${owner}|${vm.owner.token}`, {
          kind: 'wait',
          at: now,
          vm: vm.name,
          host: owner,
          reason: `${owner} is in maintenance but HA is disabled for it: it stays there (stop it, or give it an ha policy or another host)`,
        });
    }
  }
  // Higher priority first; among equals the more constrained (fewer allowed hosts), then by name.
  const order = (a: Need, b: Need) =>
    (b.vm.policy?.priority ?? 0) - (a.vm.policy?.priority ?? 0) ||
    allowedCount(a.vm.policy?.hosts) - allowedCount(b.vm.policy?.hosts) ||
    (a.vm.name < b.vm.name ? -1 : 1);
  failedNeeds.sort(order);
  maintenanceNeeds.sort(order);

  for (const need of [...failedNeeds, ...maintenanceNeeds]) {
    const { vm, owner, token } = need;
    const start = vm.policy?.state === 'started' && !vm.userStopped;
    const c = candidate(vm, start);
    const others = rooms.filter((r) => r.name !== owner);
    const choice = chooseHost(c, others, unavailable, false);
    const cause =
      need.why === 'maintenance'
        ? `${owner} is in maintenance`
        : byName.has(owner)
          ? `${owner} failed`
          : `${owner} is no longer a host of the spec`;
    if ('room' in choice) {
      const to = choice.room.name;
      // Its old host no longer counts it (a failed host's room is never a target; a drained one keeps nothing).
      const old = roomOf.get(owner);
      if (old && wouldRun(vm)) {
        old.memoryMiB -= vm.memoryMiB;
        old.cpus -= vm.cpus;
      }
      commit(choice.room, c);
      actions.push({ kind: 'assign', vm: vm.name, to, from: owner, expected: token, start });
      const room = describeRoom(choice.room);
      let kind: HaDecision['kind'];
      let reason: string;
      if (start) {
        kind = need.why === 'failed' ? 'restart' : 'move';
        reason = `${cause}: ${to} has the most room (${room})${need.why === 'maintenance' ? `; stopped on ${owner} first, then started on ${to}` : ''}`;
      } else if (vm.userStopped) {
        kind = 'keep-stopped';
        reason = `${cause}; a user stopped it: its owner moves to ${to}, HA does not start it`;
      } else {
        kind = 'move';
        reason = `${cause}; ha.state stopped: its owner moves to ${to}, not started`;
      }
      decisions.push({ kind, at: now, vm: vm.name, from: owner, to, reason });
      continue;
    }
    const kind = blockedKind(choice.blocks);
    const codes = choice.blocks.map((b) => `${b.host}:${b.code}`).join(',');
    const epoch = need.why === 'failed' ? `failed@${need.since}` : 'maintenance';
    sayOnce(vm.name, `${kind}|${owner}|${token}|${epoch}|${codes}`, {
      kind,
      at: now,
      vm: vm.name,
      host: owner,
      reason: `${cause}; no host can take it now: ${describeBlocks(choice.blocks)}`,
    });
  }
  return { memory: next, decisions, actions };
};
