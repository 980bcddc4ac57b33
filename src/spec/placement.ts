// Placement: which host each VM of a spec runs on. The spec may name it; in a cluster the owner records (written
// by apply, the HA manager and maintenance) say where a VM runs now, and a VM the spec places nowhere gets a host
// from the scheduler. Pure: the records come in as data.
import type { PlacementSource, Spec, UnplacedSpec, UnplacedVmSpec, VmSpec } from './schema.js';

/** Where one VM goes and why. */
export interface PlacedVm {
  host: string;
  source: PlacementSource;
}

/** VM name -> where it runs. */
export type Placement = Readonly<Record<string, PlacedVm>>;

/** What an owner record says, as placement needs it (see shared/cluster.ts `OwnerRecord`). */
export interface OwnerHint {
  host: string;
  /** The spec's host of the VM when the record was written. */
  specHost?: string | undefined;
}

/**
 * Placement from owner records: a VM with a record runs where the record says, unless the spec's `host` changed
 * since the record was written (the user moved it: the spec wins). VMs without a record keep the spec's host;
 * VMs with neither are left out (the scheduler places them).
 */
export function placementFromOwners(
  spec: UnplacedSpec,
  owners: Readonly<Record<string, OwnerHint>>,
): Record<string, PlacedVm> {
  const out: Record<string, PlacedVm> = {};
  const hosts = new Set(spec.hosts.map((h) => h.name));
  for (const vm of spec.vms) {
    const rec = owners[vm.name];
    if (rec && rec.specHost === vm.host && hosts.has(rec.host))
      out[vm.name] = { host: rec.host, source: 'owner' };
    else if (vm.host) out[vm.name] = { host: vm.host, source: 'spec' };
  }
  return out;
}

/**
 * The spec with every VM placed: by `placement` where it has the VM, else by the spec's own host, else by
 * `fallbackPlacement` (a spread by memory that needs no host reports; the controller's scheduler decides with
 * reports before it writes owner records, so this only shows where an offline plan would put a VM).
 */
export function placeSpec(spec: UnplacedSpec, placement: Placement = {}): Spec {
  const known: Record<string, PlacedVm> = {};
  for (const vm of spec.vms) {
    const p = placement[vm.name] ?? (vm.host ? { host: vm.host, source: 'spec' as const } : undefined);
    if (p) known[vm.name] = p;
  }
  const rest = fallbackPlacement(spec, known);
  const vms: VmSpec[] = spec.vms.map((vm) => {
    const p = known[vm.name] ?? rest[vm.name];
    // No compute host at all: keep the VM unplaced-looking; validation reports the spec's real problem.
    const placed: VmSpec = { ...vm, host: p?.host ?? '', placedBy: p?.source ?? 'scheduler' };
    if (vm.host !== undefined) placed.specHost = vm.host;
    return placed;
  });
  return { ...spec, vms };
}

/**
 * Places VMs that `known` lacks, one by one in spec order: among the compute hosts the VM's HA policy allows, the
 * one with the least memory placed on it (ties: the first in the spec), never beside a VM of its anti-affinity
 * group where another host is possible.
 */
export function fallbackPlacement(
  spec: UnplacedSpec,
  known: Readonly<Record<string, PlacedVm>>,
): Record<string, PlacedVm> {
  const compute = spec.hosts.filter((h) => h.role !== 'storage').map((h) => h.name);
  const used = new Map<string, number>(compute.map((h) => [h, 0]));
  const groupsOn = new Map<string, Set<string>>(compute.map((h) => [h, new Set()]));
  const byName = new Map(spec.vms.map((v) => [v.name, v]));
  const note = (vm: UnplacedVmSpec, host: string) => {
    used.set(host, (used.get(host) ?? 0) + vm.memoryMiB);
    if (vm.ha?.group) groupsOn.get(host)?.add(vm.ha.group);
  };
  for (const [name, p] of Object.entries(known)) {
    const vm = byName.get(name);
    if (vm) note(vm, p.host);
  }
  const out: Record<string, PlacedVm> = {};
  for (const vm of spec.vms) {
    if (known[vm.name]) continue;
    const allowed = compute.filter((h) => !vm.ha?.hosts || vm.ha.hosts.includes(h));
    const apart = vm.ha?.group ? allowed.filter((h) => !groupsOn.get(h)?.has(vm.ha!.group!)) : allowed;
    const pool = apart.length ? apart : allowed;
    const host = [...pool].sort((a, b) => (used.get(a) ?? 0) - (used.get(b) ?? 0))[0];
    if (!host) continue;
    out[vm.name] = { host, source: 'scheduler' };
    note(vm, host);
  }
  return out;
}
