// From what the controller knows (the placed spec, the newest metrics snapshot, hosts that are failed or in
// maintenance) to the planner's input. Pure: the service reads the sources, tests call this directly. A host without
// figures yet (no two samples: CPU use is a rate) is left out and said so; a VM without a CPU figure counts as idle.
import type { MetricsSnapshot } from '../../shared/metrics.js';
import type { Spec, VmSpec } from '../../spec/schema.js';
import type { BalanceHost, BalanceInput, BalanceVm } from './plan.js';

const MIB = 1024 * 1024;

/** Why a VM must stay on its host, or undefined when it may move. */
export function pinnedReason(vm: VmSpec): string | undefined {
  if (vm.cpu?.pin) return `its vCPUs are pinned to host CPUs ${vm.cpu.pin.join(', ')} (cpu.pin)`;
  if (vm.devices.length) return `it has ${vm.devices.length} passthrough device(s)`;
  if (vm.memory?.hugepages) return 'its memory is on huge pages (memory.hugepages)';
  if (vm.ha?.hosts?.length === 1) return `ha.hosts allows ${vm.ha.hosts[0]} only`;
  return undefined;
}

/**
 * Why `snapshot` is older than the placement in `spec`, or undefined when it is not: a running VM the snapshot shows
 * running on another host than the one the spec places it on (it moved since: a migration, an HA restart). Planning
 * from such figures counts the moved VM's load on its old host and proposes moves the last one already made.
 */
export function stalePlacement(spec: Spec, snapshot: MetricsSnapshot): string | undefined {
  const runningOn = new Map<string, string[]>();
  for (const s of snapshot.series) {
    const { host, vm } = s.labels;
    if (s.name !== 'vmlink_vm_running' || s.value !== 1 || !host || !vm) continue;
    runningOn.set(vm, [...(runningOn.get(vm) ?? []), host]);
  }
  for (const vm of spec.vms) {
    const on = runningOn.get(vm.name);
    if (vm.state === 'running' && on && !on.includes(vm.host))
      return `the metrics show vm ${vm.name} on ${on.join(', ')}, placed on ${vm.host} since`;
  }
  return undefined;
}

/** The planner's input and what was left out of it. */
export interface GatheredInput {
  input: BalanceInput;
  notes: string[];
}

/**
 * Builds the planner's input: compute hosts of `spec` not in `unavailable` (host -> why) with a full set of host
 * figures in `snapshot`, and the running VMs placed on them.
 */
export function gatherBalanceInput(
  spec: Spec,
  snapshot: MetricsSnapshot,
  unavailable: ReadonlyMap<string, string>,
): GatheredInput {
  const notes: string[] = [];
  const value = new Map<string, number>();
  for (const s of snapshot.series) {
    const host = s.labels.host;
    if (host === undefined) continue;
    value.set(`${s.name}|${host}|${s.labels.vm ?? ''}`, s.value);
  }
  const get = (metric: string, host: string, vm = '') => value.get(`${metric}|${host}|${vm}`);
  // A VM still running on a host it has left (a migration's source QEMU exits a second or two after the move; the
  // collector may sample it) is not that host's load: its own figures come off the host's, so the plan does not move
  // another VM to relieve a host the last move relieved already.
  const placedOn = new Map(spec.vms.map((v) => [v.name, v.host]));
  const leaving = new Map<string, { cpu: number; memMiB: number; vms: string[] }>();
  for (const s of snapshot.series) {
    const { host, vm } = s.labels;
    if (s.name !== 'vmlink_vm_running' || s.value !== 1 || !host || !vm || placedOn.get(vm) === host)
      continue;
    const l = leaving.get(host) ?? { cpu: 0, memMiB: 0, vms: [] };
    l.cpu += get('vmlink_vm_cpu_utilization', host, vm) ?? 0;
    l.memMiB += (get('vmlink_vm_memory_rss_bytes', host, vm) ?? 0) / MIB;
    l.vms.push(vm);
    leaving.set(host, l);
  }
  const hosts: BalanceHost[] = [];
  for (const h of spec.hosts) {
    if (h.role === 'storage') continue;
    const why = unavailable.get(h.name);
    if (why) {
      notes.push(`${h.name} left out: ${why}`);
      continue;
    }
    const cpus = get('vmlink_host_cpus', h.name);
    const util = get('vmlink_host_cpu_utilization', h.name);
    const memTotal = get('vmlink_host_memory_total_bytes', h.name);
    const memUsed = get('vmlink_host_memory_used_bytes', h.name);
    if (!cpus || util === undefined || !memTotal || memUsed === undefined) {
      notes.push(
        `${h.name} left out: no CPU and memory figures yet (the metrics collector needs two samples)`,
      );
      continue;
    }
    const left = leaving.get(h.name);
    if (left)
      notes.push(
        `${h.name}: ${left.vms.map((v) => `vm ${v}`).join(', ')} still running there, placed elsewhere (a move's source exiting): not counted as ${h.name}'s load`,
      );
    hosts.push({
      name: h.name,
      cpus,
      memoryMiB: memTotal / MIB,
      cpuBusy: Math.max(0, util * cpus - (left?.cpu ?? 0)),
      memoryUsedMiB: Math.max(0, memUsed / MIB - (left?.memMiB ?? 0)),
      ...(h.capacity ? { capacity: h.capacity } : {}),
    });
  }
  const present = new Set(hosts.map((h) => h.name));
  const vms: BalanceVm[] = [];
  for (const vm of spec.vms) {
    if (vm.state !== 'running' || !present.has(vm.host)) continue;
    if (get('vmlink_vm_running', vm.host, vm.name) === 0) continue;
    const rss = get('vmlink_vm_memory_rss_bytes', vm.host, vm.name);
    const pinned = pinnedReason(vm);
    vms.push({
      name: vm.name,
      host: vm.host,
      cpus: vm.cpus,
      memoryMiB: vm.memoryMiB,
      cpuBusy: get('vmlink_vm_cpu_utilization', vm.host, vm.name) ?? 0,
      ...(rss !== undefined ? { memoryUsedMiB: rss / MIB } : {}),
      ...(vm.ha?.hosts ? { hosts: vm.ha.hosts } : {}),
      ...(vm.ha?.group ? { group: vm.ha.group } : {}),
      ...(pinned ? { pinned } : {}),
    });
  }
  return {
    input: { hosts, vms, thresholdPoints: spec.cluster?.balanceThreshold },
    notes,
  };
}
