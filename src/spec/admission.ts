// Admission: a spec that validated on its own is checked against the hosts that will run it: their CPU and
// memory capacity (as agents report it, or as `hosts[].capacity` sets it) and the backends and kernel
// features they report. Validation (./validate/) is pure and needs no host; admission needs their reports.
import type { SpecIssue } from '../shared/errors.js';
import type { ConfidentialCapabilities } from '../shared/model.js';
import type { TuningCapabilities } from '../shared/tuning.js';
import { checkTuning } from './admission-tuning.js';
import type { Spec } from './schema.js';
import { networkHosts } from './topology.js';

/** CPUs and memory of one host, as its agent reports them or the spec's `hosts[].capacity` sets them. */
export interface HostCapacity {
  cpus: number;
  memoryMiB: number;
}

/** Memory kept free on every host for the host itself and QEMU overhead. */
export const HOST_MEMORY_RESERVE_MIB = 256;

/**
 * Checks VMs against host capacity: `capacities` are what agents report, overridden by `hosts[].capacity`.
 * Hosts with neither are not checked.
 */
export function checkCapacity(spec: Spec, capacities: Record<string, HostCapacity>): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const specCap = new Map(spec.hosts.map((h) => [h.name, h.capacity] as const));
  const capOf = (host: string): HostCapacity | undefined => specCap.get(host) ?? capacities[host];
  const used = new Map<string, { total: number; names: string[]; reported: boolean }>();
  spec.vms.forEach((vm, i) => {
    const cap = capOf(vm.host);
    if (!cap) return;
    if (vm.cpus > cap.cpus)
      issues.push({
        path: `vms[${i}].cpus`,
        message: `VM "${vm.name}" asks for ${vm.cpus} CPUs but host "${vm.host}" has ${cap.cpus}; lower cpus or move the VM`,
      });
    const avail = cap.memoryMiB - HOST_MEMORY_RESERVE_MIB;
    const reserve = `${cap.memoryMiB} MiB less ${HOST_MEMORY_RESERVE_MIB} MiB reserved = ${avail} MiB`;
    if (vm.memoryMiB > avail) {
      issues.push({
        path: `vms[${i}].memoryMiB`,
        message: `VM "${vm.name}" needs ${vm.memoryMiB} MiB but host "${vm.host}" has ${reserve}`,
      });
      return;
    }
    if (vm.state !== 'running') return;
    const u = used.get(vm.host) ?? { total: 0, names: [], reported: false };
    used.set(vm.host, u);
    u.total += vm.memoryMiB;
    u.names.push(`${vm.name} ${vm.memoryMiB}`);
    if (u.total > avail && !u.reported) {
      u.reported = true;
      issues.push({
        path: `vms[${i}].memoryMiB`,
        message: `running VMs on host "${vm.host}" need ${u.total} MiB (${u.names.join(', ')} MiB) but the host has ${reserve}; stop a VM, lower memoryMiB or move it to another host`,
      });
    }
  });
  return issues;
}

/** What a host reports it can do, for `checkHostSupport`. */
export interface HostSupport {
  backends: readonly string[];
  /** Kernel network features (vlan, vxlan, bridgeVlanFiltering, ...). */
  network: Record<string, boolean>;
  /** The accelerator VMs run under there (confidential VMs need KVM). */
  accelerator?: 'kvm' | 'tcg';
  /** Confidential-VM support, kind by kind (absent: an agent that does not report it, so none). */
  confidential?: ConfidentialCapabilities;
  /** What the host can tune (absent: an agent that does not report it, so `hosts[].tuning` is refused there). */
  tuning?: TuningCapabilities;
}

/**
 * Checks every network against the backends and kernel features its member hosts report, so that a network no
 * host can realise is refused before any change (a kernel without 802.1Q devices, say: vlan then needs ovs).
 */
export function checkHostSupport(spec: Spec, hosts: Record<string, HostSupport>): SpecIssue[] {
  const issues: SpecIssue[] = [];
  spec.networks.forEach((net, i) => {
    for (const h of networkHosts(spec, net)) {
      const sup = hosts[h];
      if (!sup) continue;
      if (!sup.backends.includes(net.backend)) {
        issues.push({
          path: `networks[${i}].backend`,
          message: `host "${h}" has no ${net.backend} backend (it offers ${sup.backends.join(', ') || 'none'}); ${
            net.backend === 'ovs'
              ? 'install openvswitch-switch there (npm run setup does)'
              : 'use another backend'
          }`,
        });
        continue;
      }
      if (net.backend !== 'linux') continue;
      if (net.mode === 'vlan' && sup.network.vlan === false)
        issues.push({
          path: `networks[${i}].backend`,
          message: `host "${h}"'s kernel has no 802.1Q VLAN devices, so the linux backend cannot build vlan network "${net.name}"; use backend: ovs (Open vSwitch's userspace datapath does VLANs without kernel support)`,
        });
      if (net.mode === 'vxlan' && sup.network.vxlan === false)
        issues.push({
          path: `networks[${i}].backend`,
          message: `host "${h}"'s kernel has no VXLAN support; use backend: ovs for vxlan network "${net.name}"`,
        });
    }
  });
  return issues;
}

/**
 * Checks every confidential VM against its host's report: KVM, and the kind's support (CPU, kernel, firmware, QEMU);
 * the refusal names the host and the missing piece.
 */
export function checkConfidential(spec: Spec, hosts: Record<string, HostSupport>): SpecIssue[] {
  const issues: SpecIssue[] = [];
  spec.vms.forEach((vm, i) => {
    const kind = vm.confidential;
    const sup = hosts[vm.host];
    if (!kind || !sup) return;
    const refuse = (why: string) =>
      issues.push({
        path: `vms[${i}].confidential`,
        message: `VM "${vm.name}" asks for a ${kind} confidential VM but host "${vm.host}" cannot launch one: ${why}`,
      });
    if (sup.accelerator !== 'kvm')
      refuse(`it runs VMs under ${sup.accelerator ?? 'an unknown accelerator'}, not KVM`);
    else if (!sup.confidential) refuse('its agent reports no confidential-VM support (upgrade the agent)');
    else if (!sup.confidential[kind].available) refuse(sup.confidential[kind].reason);
  });
  return issues;
}

/** What admission needs of one host: its capacity and what it can realise (an agent's capability report). */
export type HostAdmission = HostCapacity & HostSupport;

/**
 * Admission: checks a valid spec against what its hosts report (capacity, backends, kernel features),
 * after validation and before any change. Hosts without a report are not checked.
 */
export function admitSpec(spec: Spec, hosts: Record<string, HostAdmission>): SpecIssue[] {
  return [
    ...checkCapacity(spec, hosts),
    ...checkHostSupport(spec, hosts),
    ...checkConfidential(spec, hosts),
    ...checkTuning(spec, hosts),
  ];
}
