// What a plan destroys for good (VMs with their disks, networks VMs use) and what it only detaches: data, pure.
import type { VmConfig } from '../shared/model.js';
import type { DesiredState } from './resolve.js';
import type { Plan } from './steps.js';

/** Something a plan destroys for good. */
export type Loss =
  | {
      kind: 'vm';
      host: string;
      name: string;
      /** The disks deleted with it; undefined when no earlier spec says which (then: all in its directory). */
      disks?: string[];
      /** The host it is recreated on (a move): its disks are deleted here, not carried over. */
      movedTo?: string;
    }
  | { kind: 'network'; host: string; name: string; usedBy: string[] };

/** A VM whose deletion the plan asks for although its spec says `protected: true`. */
export interface ProtectedDeletion {
  host: string;
  name: string;
}

/** What a plan destroys, what it refuses to destroy, and what it keeps although the spec no longer names it. */
export interface DestroyAnalysis {
  losses: Loss[];
  /** Deletions of protected VMs: refused even when destruction is allowed. */
  protectedDeletions: ProtectedDeletion[];
  /** Data the plan detaches but keeps (disks removed from a VM's spec), one sentence each. */
  kept: string[];
}

/**
 * The disks of a VM lost with it, as a person names them: its root overlay (cloud images), each disk in its
 * directory, and the pool volumes made for it that the plan deletes (`deletedVolumes`: `pool/volume`). Volumes it
 * only attached (and made volumes the plan keeps, say for a move) are not lost.
 */
export function vmDisks(vm: VmConfig, deletedVolumes: ReadonlySet<string> = new Set()): string[] {
  const gone = (pool: string, volume: string) => deletedVolumes.has(`${pool}/${volume}`);
  const root = vm.rootSource;
  return [
    ...(vm.image.kind === 'qcow2' ? [`root (overlay of ${vm.image.path})`] : []),
    ...(root && gone(root.pool, root.volume)
      ? [
          `root (volume ${root.pool}/${root.volume}, a clone of ${vm.image.kind === 'volume' ? vm.image.volume : 'a template'})`,
        ]
      : []),
    ...vm.disks.flatMap((d) => {
      if (!d.source) return [`${d.name} (${d.sizeMiB} MiB)`];
      return gone(d.source.pool, d.source.volume)
        ? [`${d.name} (volume ${d.source.pool}/${d.source.volume}, ${d.sizeMiB} MiB)`]
        : [];
    }),
  ];
}

/** The pool volumes a VM only attached: kept when it is deleted. */
function attachedVolumes(vm: VmConfig, deletedVolumes: ReadonlySet<string>): string[] {
  const all = [
    ...vm.disks.flatMap((d) => (d.source ? [d.source] : [])),
    ...(vm.rootSource ? [vm.rootSource] : []),
  ];
  return all.map((s) => `${s.pool}/${s.volume}`).filter((k) => !deletedVolumes.has(k));
}

/**
 * Analyses `plan`: every `vm.delete` loses the VM and its disks (the agent removes its directory), every
 * `network.delete` of a network that VMs of `before` use on that host, and the plan keeps, is listed with them, and every disk that a
 * `vm.update` no longer names is kept (the hypervisor leaves its file in the VM's directory). `before` is the
 * state applied until now (as far as known), `protectedVms` the names whose deletion is refused.
 */
export function analyzeDestruction(
  plan: Plan,
  before: DesiredState,
  protectedVms: ReadonlySet<string>,
): DestroyAnalysis {
  const vmBefore = (host: string, name: string) => before[host]?.vms.find((v) => v.name === name);
  const losses: Loss[] = [];
  const protectedDeletions: ProtectedDeletion[] = [];
  const kept: string[] = [];
  const deleted = new Set(plan.steps.flatMap((s) => (s.kind === 'vm.delete' ? [`${s.host}/${s.name}`] : [])));
  const deletedVolumes = new Set(
    plan.steps.flatMap((s) => (s.kind === 'volume.delete' ? [`${s.pool}/${s.name}`] : [])),
  );
  kept.push(...(plan.kept ?? []));
  for (const step of plan.steps) {
    if (step.kind === 'vm.delete') {
      const old = vmBefore(step.host, step.name);
      const movedTo = plan.steps.find(
        (s) => s.kind === 'vm.create' && s.vm.name === step.name && s.host !== step.host,
      )?.host;
      losses.push({
        kind: 'vm',
        host: step.host,
        name: step.name,
        ...(old ? { disks: vmDisks(old, deletedVolumes) } : {}),
        ...(movedTo ? { movedTo } : {}),
      });
      for (const v of old ? attachedVolumes(old, deletedVolumes) : [])
        kept.push(`volume ${v} of vm ${step.name} is detached, not deleted: it stays in its pool`);
      if (protectedVms.has(step.name)) protectedDeletions.push({ host: step.host, name: step.name });
    } else if (step.kind === 'network.delete') {
      // VMs deleted with it are listed themselves; those that stay lose their NICs' network.
      const usedBy = (before[step.host]?.vms ?? [])
        .filter((vm) => !deleted.has(`${step.host}/${vm.name}`))
        .filter((vm) =>
          vm.nics.some((n) => n.network === step.name || (n.trunk?.networks.includes(step.name) ?? false)),
        )
        .map((vm) => vm.name)
        .sort();
      if (usedBy.length) losses.push({ kind: 'network', host: step.host, name: step.name, usedBy });
    } else if (step.kind === 'vm.update') {
      const old = vmBefore(step.host, step.vm.name);
      const now = new Set(step.vm.disks.map((d) => d.name));
      for (const d of old?.disks ?? [])
        if (!now.has(d.name) && d.source)
          kept.push(
            `disk ${d.name} of vm ${step.vm.name} on ${step.host} is detached, not deleted: volume ${d.source.pool}/${d.source.volume} stays in its pool`,
          );
        else if (!now.has(d.name))
          kept.push(
            `disk ${d.name} of vm ${step.vm.name} on ${step.host} is detached, not deleted: its file stays in the VM's directory (name it again to reattach it)`,
          );
    }
  }
  return { losses, protectedDeletions, kept };
}

/** One line per loss, e.g. `vm web1 on host1 and its disks: root (overlay of /img/deb.qcow2), data (1024 MiB)`. */
export function formatLoss(l: Loss): string {
  if (l.kind === 'network')
    return `network ${l.name} on ${l.host}, used by vm ${l.usedBy.join(', ')} (their NICs on it go down)`;
  const disks =
    l.disks === undefined
      ? ' and every disk in its directory'
      : l.disks.length
        ? ` and its disks: ${l.disks.join(', ')}`
        : ' (it has no disks)';
  const move = l.movedTo ? `, moving to ${l.movedTo}: nothing is copied over` : '';
  return `vm ${l.name} on ${l.host}${disks}${move}`;
}
