// A minimal decision engine behind `DecideFn`, used until ha-engine's decide.ts (golden-tested, flap damping,
// fair ordering) is merged; then this file goes. Rules: a host without a lease is failed; VMs with a `started` or
// `stopped` policy owned by a failed host or a host in maintenance go, by priority, to the live host (lease at least
// TARGET_LEASE_MIN_AGE_MS old, not in maintenance, allowed by the policy, no VM of the same group) with the most
// free memory.
import { TARGET_LEASE_MIN_AGE_MS } from '../../shared/cluster.js';
import type { DecideFn, HaAction, HaMemory } from './types.js';

const RESERVE_MIB = 256;

/** One round (see `DecideFn`). */
export const decideMinimal: DecideFn = (memory, inputs) => {
  const hosts: HaMemory['hosts'] = { ...memory.hosts };
  const decisions: ReturnType<DecideFn>['decisions'] = [];
  const actions: HaAction[] = [];
  const { now } = inputs;
  for (const h of inputs.hosts) {
    const was = hosts[h.name];
    if (h.live && was?.state !== 'up') {
      if (was) decisions.push({ kind: 'host-recovered', at: now, host: h.name, reason: 'its lease is back' });
      hosts[h.name] = { state: 'up', since: now, failures: was?.failures ?? [] };
    } else if (!h.live && was?.state !== 'failed') {
      decisions.push({ kind: 'host-failed', at: now, host: h.name, reason: 'its lease ended' });
      hosts[h.name] = { state: 'failed', since: now, failures: [...(was?.failures ?? []), now] };
    }
  }
  const byName = new Map(inputs.hosts.map((h) => [h.name, h]));
  const used = new Map<string, number>();
  const groups = new Map<string, Set<string>>();
  for (const vm of inputs.vms) {
    if (!vm.owner) continue;
    used.set(vm.owner.host, (used.get(vm.owner.host) ?? 0) + vm.memoryMiB);
    if (vm.policy?.group)
      groups.set(vm.owner.host, new Set([...(groups.get(vm.owner.host) ?? []), vm.policy.group]));
  }
  const movable = inputs.vms
    .filter((vm) => vm.owner && vm.policy && vm.policy.state !== 'disabled')
    .filter((vm) => {
      const h = byName.get(vm.owner!.host);
      return !h?.live || h.maintenance;
    })
    .sort((a, b) => (b.policy?.priority ?? 0) - (a.policy?.priority ?? 0) || a.name.localeCompare(b.name));
  for (const vm of movable) {
    const from = vm.owner!.host;
    const fromLive = byName.get(from)?.live ?? false;
    const targets = inputs.hosts
      .filter((h) => h.live && !h.maintenance && h.name !== from)
      .filter((h) => (h.leaseAgeMs ?? 0) >= TARGET_LEASE_MIN_AGE_MS)
      .filter((h) => !vm.policy?.hosts || vm.policy.hosts.includes(h.name))
      .filter((h) => !vm.policy?.group || !groups.get(h.name)?.has(vm.policy.group))
      .filter((h) => h.capacity.memoryMiB - RESERVE_MIB - (used.get(h.name) ?? 0) >= vm.memoryMiB)
      .sort(
        (a, b) =>
          b.capacity.memoryMiB - (used.get(b.name) ?? 0) - (a.capacity.memoryMiB - (used.get(a.name) ?? 0)) ||
          a.name.localeCompare(b.name),
      );
    const to = targets[0];
    if (!to) {
      decisions.push({
        kind: 'no-capacity',
        at: now,
        vm: vm.name,
        from,
        reason: 'no live host has room for it',
      });
      continue;
    }
    const start = vm.policy!.state === 'started' && !vm.userStopped;
    decisions.push({
      kind: fromLive ? 'move' : start ? 'restart' : 'keep-stopped',
      at: now,
      vm: vm.name,
      from,
      to: to.name,
      reason: fromLive ? `${from} is in maintenance` : `${from} failed`,
    });
    actions.push({ kind: 'assign', vm: vm.name, to: to.name, from, expected: vm.owner!.token, start });
    used.set(to.name, (used.get(to.name) ?? 0) + vm.memoryMiB);
    if (vm.policy?.group) groups.set(to.name, new Set([...(groups.get(to.name) ?? []), vm.policy.group]));
  }
  return { memory: { ...memory, hosts }, decisions, actions };
};
