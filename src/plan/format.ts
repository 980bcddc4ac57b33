// Human-readable plans, in the manner of `terraform plan`.
import type { NetworkConfig, VmConfig } from '../shared/model.js';
import type { Plan, Step } from './steps.js';

/** Text of an empty plan. */
export const NO_CHANGES = 'No changes. Infrastructure matches the spec.';

function describeNetwork(n: NetworkConfig): string {
  if (n.subnet) return `${n.mode} ${n.subnet.cidr}`;
  return n.uplink ? `${n.mode} on ${n.uplink}` : n.mode;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

function describeVm(vm: VmConfig): string {
  const nets = vm.nics.map((n) => n.network).join(', ');
  return `${plural(vm.cpus, 'cpu')}, ${vm.memoryMiB} MiB, ${vm.image.kind}, nics: ${nets}`;
}

/** One line for one step: `+` create, `~` update, `-` delete, `>` start, `<` stop. */
export function formatStep(s: Step): string {
  switch (s.kind) {
    case 'network.create':
      return `+ network ${s.network.name} on ${s.host} (${describeNetwork(s.network)})`;
    case 'network.update':
      return `~ network ${s.network.name} on ${s.host} (${s.reason})`;
    case 'network.delete':
      return `- network ${s.name} on ${s.host} (${s.reason})`;
    case 'vm.create':
      return `+ vm ${s.vm.name} on ${s.host} (${describeVm(s.vm)})`;
    case 'vm.delete':
      return `- vm ${s.name} on ${s.host} (${s.reason})`;
    case 'vm.start':
      return `> vm ${s.name} start on ${s.host}`;
    case 'vm.stop':
      return `< vm ${s.name} stop${s.force ? ' (forced)' : ''} on ${s.host} (${s.reason})`;
  }
}

/** Counts of a plan's steps by what they do; a replaced VM counts once as delete and once as create. */
export function summarizePlan(plan: Plan): {
  create: number;
  update: number;
  delete: number;
  start: number;
  stop: number;
} {
  const c = { create: 0, update: 0, delete: 0, start: 0, stop: 0 };
  for (const s of plan.steps) {
    if (s.kind === 'network.create' || s.kind === 'vm.create') c.create++;
    else if (s.kind === 'network.update') c.update++;
    else if (s.kind === 'network.delete' || s.kind === 'vm.delete') c.delete++;
    else if (s.kind === 'vm.start') c.start++;
    else c.stop++;
  }
  return c;
}

/** The plan as text: one line per step, a blank line and a summary; or `NO_CHANGES` when empty. */
export function formatPlan(plan: Plan): string {
  if (plan.steps.length === 0) return NO_CHANGES;
  const c = summarizePlan(plan);
  return [
    ...plan.steps.map(formatStep),
    '',
    `Plan: ${c.create} to create, ${c.update} to update, ${c.delete} to delete, ${c.start} to start, ${c.stop} to stop.`,
  ].join('\n');
}
