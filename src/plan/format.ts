// Human-readable plans, in the manner of `terraform plan`.

import { CONFIRM_WINDOW_MS } from '../shared/limits.js';
import type { NetworkConfig, UplinkConfig, VmConfig } from '../shared/model.js';
import type { SecurityGroupConfig } from '../shared/security-groups.js';
import type { PoolConfig } from '../shared/storage.js';
import type { Plan, Step } from './steps.js';

/** Text of an empty plan. */
export const NO_CHANGES = 'No changes. Infrastructure matches the spec.';

function describeNetwork(n: NetworkConfig): string {
  const backend = n.backend === 'linux' ? '' : `, ${n.backend}`;
  if (n.vxlan) {
    const peers = n.vxlan.remotes.length ? ` to ${n.vxlan.remotes.join(', ')}` : '';
    const subnet = n.subnet
      ? `, gateway ${n.subnet.gateway}/${n.subnet.prefixLength}${n.nat ? ' nat' : ''}`
      : '';
    return `vxlan vni ${n.vxlan.vni}${peers}${subnet}${backend}`;
  }
  if (n.vlan) {
    const subnet = n.subnet
      ? `, gateway ${n.subnet.gateway}/${n.subnet.prefixLength}${n.nat ? ' nat' : ''}`
      : '';
    return `vlan ${n.vlan.id} on ${n.vlan.trunk}${subnet}${backend}`;
  }
  if (n.subnet) return `${n.mode} ${n.subnet.cidr}`;
  return n.uplink ? `${n.mode} on ${n.uplink}` : n.mode;
}

function describePool(p: PoolConfig): string {
  const parts = [p.type, p.path];
  // The CHAP secret's name only: its value never enters a plan.
  if (p.chap) parts.push(`CHAP user ${p.chap.user} (secret: ${p.chap.secret})`);
  if (p.nfs) parts.push(`export ${p.nfs.pseudoPath}`);
  if (p.clients?.length) parts.push(`clients ${p.clients.join(', ')}`);
  return parts.join(', ');
}

function describeUplink(u: UplinkConfig): string {
  const parts: string[] = [];
  if (u.mtu !== undefined) parts.push(`mtu ${u.mtu}`);
  if (u.addresses !== undefined) parts.push(u.addresses.join(', '));
  if (u.gateway !== undefined) parts.push(`gateway ${u.gateway}`);
  return parts.length ? parts.join(', ') : u.device;
}

/** ` [commit-confirm 60 s]` for a risky step, else the empty string. */
function confirmMark(s: Step): string {
  if (!('risky' in s) || !s.risky) return '';
  const ms = s.confirmTimeoutMs ?? CONFIRM_WINDOW_MS;
  return ` [commit-confirm ${Math.round(ms / 1000)} s]`;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

function describeGroup(g: SecurityGroupConfig): string {
  return `${plural(g.rules.length, 'rule')}, ${plural(g.memberMacs.length, 'member')}`;
}

function describeVm(vm: VmConfig): string {
  const nets = vm.nics.map((n) => (n.trunk ? `trunk ${n.trunk.networks.join('+')}` : n.network)).join(', ');
  // Encrypted disks show the secret's name only: its value never enters a plan.
  const disks = vm.disks.map((d) => {
    const notes = [
      ...(d.source ? [`${d.source.pool}/${d.source.volume}`] : []),
      ...(d.media === 'cdrom' ? ['cdrom'] : d.readOnly ? ['read-only'] : []),
      ...(d.encryption ? [`secret: ${d.encryption.secret}`] : []),
    ];
    return notes.length ? `${d.name} (${notes.join(', ')})` : d.name;
  });
  const image = vm.rootSource ? `volume ${vm.rootSource.pool}/${vm.rootSource.volume}` : vm.image.kind;
  const devices = vm.devices?.length
    ? `, devices: ${vm.devices.map((d) => ('pci' in d ? `pci ${d.pci}` : `usb ${d.usb}`)).join(', ')}`
    : '';
  return `${plural(vm.cpus, 'cpu')}, ${vm.memoryMiB} MiB, ${image}${vm.confidential ? `, confidential ${vm.confidential}` : ''}, nics: ${nets}${disks.length ? `, disks: ${disks.join(', ')}` : ''}${devices}`;
}

/**
 * One line for one step: `+` create, `~` update, `-` delete, `>` start, `<` stop; risky steps end with
 * ` [commit-confirm N s]`.
 */
export function formatStep(s: Step): string {
  return describeStep(s) + confirmMark(s);
}

function describeStep(s: Step): string {
  switch (s.kind) {
    case 'uplink.configure':
      return `~ uplink of ${s.host} (${describeUplink(s.uplink)})`;
    case 'tuning.configure':
      return `~ tuning of ${s.host}: ${s.changes.join(', ')}`;
    case 'network.create':
      return `+ network ${s.network.name} on ${s.host} (${describeNetwork(s.network)})`;
    case 'network.update':
      return s.changes?.length
        ? `~ network ${s.network.name} on ${s.host}: ${s.changes.join(', ')}`
        : `~ network ${s.network.name} on ${s.host} (${s.reason})`;
    case 'network.delete':
      return `- network ${s.name} on ${s.host} (${s.reason})`;
    case 'securityGroup.create':
      return `+ securityGroup ${s.group.name} on ${s.host} (${describeGroup(s.group)})`;
    case 'securityGroup.update':
      return s.changes?.length
        ? `~ securityGroup ${s.group.name} on ${s.host}: ${s.changes.join('; ')}`
        : `~ securityGroup ${s.group.name} on ${s.host} (${s.reason}; ${describeGroup(s.group)})`;
    case 'securityGroup.delete':
      return `- securityGroup ${s.name} on ${s.host} (${s.reason})`;
    case 'vm.create':
      return `+ vm ${s.vm.name} on ${s.host} (${describeVm(s.vm)})`;
    case 'vm.update':
      return s.changes?.length
        ? `~ vm ${s.vm.name} on ${s.host}: ${s.changes.join(', ')}`
        : `~ vm ${s.vm.name} on ${s.host} (${s.reason}; ${describeVm(s.vm)})`;
    case 'vm.hotplug':
      return `~ vm ${s.vm.name} on ${s.host}: ${s.changes.join(', ')}`;
    case 'vm.delete':
      return `- vm ${s.name} on ${s.host} (${s.reason})`;
    case 'vm.start':
      return `> vm ${s.name} start on ${s.host}`;
    case 'vm.stop':
      return `< vm ${s.name} stop${s.force ? ' (forced)' : ''} on ${s.host} (${s.reason})`;
    case 'pool.create':
      return `+ pool ${s.pool.name} on ${s.host} (${describePool(s.pool)})`;
    case 'pool.update':
      return `~ pool ${s.pool.name} on ${s.host}: ${s.changes?.length ? s.changes.join(', ') : s.reason}`;
    case 'pool.delete':
      return `- pool ${s.pool.name} on ${s.host} (${s.reason})`;
    case 'volume.create': {
      const v = s.volume;
      const from = v.from ? `, ${v.from.linked ? 'linked clone' : 'copy'} of ${v.from.volume}` : '';
      const enc = v.encryption ? `, encrypted (secret: ${v.encryption.secret})` : '';
      return `+ volume ${v.pool}/${v.name} on ${s.host} (${v.sizeMiB} MiB ${v.format}${from}${enc})`;
    }
    case 'volume.resize':
      return `~ volume ${s.pool}/${s.name} on ${s.host}: size ${s.fromMiB} -> ${s.sizeMiB} MiB${s.vm ? ` (online, through vm ${s.vm.name})` : ''}`;
    case 'volume.delete':
      return `- volume ${s.pool}/${s.name} on ${s.host} (${s.reason})`;
    case 'lb.create':
      return `+ load balancer ${s.lb.name} on ${s.host} (VIP ${s.lb.vip} on ${s.lb.network}, ${s.lb.frontends.map((f) => `${f.protocol}/${f.port}`).join(', ')} -> ${s.lb.backends.map((b) => b.vm).join(', ')})`;
    case 'lb.update':
      return `~ load balancer ${s.lb.name} on ${s.host} (${s.reason})`;
    case 'lb.delete':
      return `- load balancer ${s.name} on ${s.host} (${s.reason})`;
  }
}

/** Counts of a plan's steps by what they do. */
export function summarizePlan(plan: Plan): {
  create: number;
  update: number;
  delete: number;
  start: number;
  stop: number;
} {
  const c = { create: 0, update: 0, delete: 0, start: 0, stop: 0 };
  for (const s of plan.steps) {
    if (s.kind === 'vm.start') c.start++;
    else if (s.kind === 'vm.stop') c.stop++;
    else if (s.kind.endsWith('.create')) c.create++;
    else if (s.kind.endsWith('.delete')) c.delete++;
    else c.update++;
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
