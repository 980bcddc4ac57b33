// Plan steps: data only. The controller sends each to its host's agent in plan order.
import type { LbConfig } from '../shared/lb.js';
import type { NetworkConfig, UplinkConfig, VmConfig } from '../shared/model.js';
import type { SecurityGroupConfig } from '../shared/security-groups.js';
import type { PoolConfig, VolumeConfig } from '../shared/storage.js';
import type { HostTuningSpec } from '../spec/schema-observe.js';

/**
 * Marks a step that touches the host's uplink (it may cut the host off the network): the controller sends it
 * commit-confirmed, and the agent reverts it unless confirmed within `confirmTimeoutMs`.
 */
export interface RiskyMark {
  risky?: boolean;
  /** Set with `risky`: the commit-confirm window (`hosts[].confirmTimeoutSeconds` in ms). */
  confirmTimeoutMs?: number;
}

/** Creates a network, or updates one in place (the network driver's ensureNetwork does both). */
export interface NetworkEnsureStep extends RiskyMark {
  kind: 'network.create' | 'network.update';
  host: string;
  network: NetworkConfig;
  configHash: string;
  reason: string;
  /** Changed fields with how each is applied (`mtu 1500 -> 9000 (in place)`), when the host reported its config. */
  changes?: string[];
}

/** Deletes a network; planned after the VMs on it are gone. */
export interface NetworkDeleteStep extends RiskyMark {
  kind: 'network.delete';
  host: string;
  name: string;
  reason: string;
}

/**
 * Creates a security group on a host, or updates its rules and members in place (one transaction per backend:
 * ports already in it never see a gap); planned before the VMs whose ports use it.
 */
export interface SecurityGroupEnsureStep {
  kind: 'securityGroup.create' | 'securityGroup.update';
  host: string;
  group: SecurityGroupConfig;
  configHash: string;
  reason: string;
  /** What changed (`rules +tcp/443 from 0.0.0.0/0`, `members +52:54:00:00:00:01`), when the host reported it. */
  changes?: string[];
}

/** Deletes a security group no port on its host uses any more; planned after those ports are gone or changed. */
export interface SecurityGroupDeleteStep {
  kind: 'securityGroup.delete';
  host: string;
  name: string;
  reason: string;
}

/** Configures the host's uplink itself (MTU, addresses, gateway); first on its host, always commit-confirmed. */
export interface UplinkConfigureStep {
  kind: 'uplink.configure';
  host: string;
  uplink: UplinkConfig;
  configHash: string;
  reason: string;
  risky: true;
  confirmTimeoutMs: number;
}

/**
 * Sets the host's TCP tuning (`hosts[].tuning`): the fields whose observed value differs from the spec; first on
 * its host (after its uplink), always commit-confirmed.
 */
export interface TuningConfigureStep {
  kind: 'tuning.configure';
  host: string;
  /** The drifting fields with their desired values. */
  tuning: HostTuningSpec;
  reason: string;
  /** `congestion bbr -> reno` per field. */
  changes: string[];
  risky: true;
  confirmTimeoutMs: number;
}

/**
 * Creates a VM (stopped) from its config; `configHash` is stored with it. `vm.update` does the same to an existing
 * VM in place (it must be stopped unless only its ports are repaired): its disks are kept.
 */
export interface VmCreateStep {
  kind: 'vm.create' | 'vm.update';
  host: string;
  vm: VmConfig;
  configHash: string;
  reason: string;
  /** Changed fields with how each is applied (`memoryMiB 256 -> 320 (restart)`), when the host reported its config. */
  changes?: string[];
}

/**
 * Brings a running VM's NICs and disks in line with `vm` without restarting it (QMP hot-plug and unplug), then
 * stores `vm` as its config; planned only when NICs and pool disks are all that changed.
 */
export interface VmHotplugStep {
  kind: 'vm.hotplug';
  host: string;
  vm: VmConfig;
  configHash: string;
  reason: string;
  /** Changed NICs with how each is applied (`nics +natnet (hot-plug)`). */
  changes: string[];
}

/** Starts or deletes a VM by name. */
export interface VmNamedStep {
  kind: 'vm.start' | 'vm.delete';
  host: string;
  name: string;
  reason: string;
}

/** Stops a VM: gracefully (ACPI) or, when `force`, at once. */
export interface VmStopStep {
  kind: 'vm.stop';
  host: string;
  name: string;
  force: boolean;
  reason: string;
}

/** Creates a pool on its host, or repairs or updates it in place; planned before the volumes in it. */
export interface PoolEnsureStep {
  kind: 'pool.create' | 'pool.update';
  host: string;
  pool: PoolConfig;
  configHash: string;
  reason: string;
  changes?: string[];
}

/** Deletes an empty pool no longer in the spec (a pool with volumes is refused at plan time). */
export interface PoolDeleteStep {
  kind: 'pool.delete';
  host: string;
  pool: PoolConfig;
  reason: string;
}

/** Creates a volume on its pool's host (before the VMs that use it); an existing volume is kept. */
export interface VolumeCreateStep {
  kind: 'volume.create';
  host: string;
  volume: VolumeConfig;
  reason: string;
}

/**
 * Grows a volume: on its pool's host when no running VM has it open, else (`vm` set, backend with online resize)
 * on the VM's host through QMP.
 */
export interface VolumeResizeStep {
  kind: 'volume.resize';
  host: string;
  pool: string;
  name: string;
  fromMiB: number;
  sizeMiB: number;
  /** The running VM (and its disk) through which it grows online. */
  vm?: { name: string; disk: string };
  reason: string;
}

/** Deletes a volume made for a VM (`{ pool, sizeMiB }` disks), after the VM is gone. */
export interface VolumeDeleteStep {
  kind: 'volume.delete';
  host: string;
  pool: string;
  name: string;
  reason: string;
}

/**
 * Creates a load balancer on one of its hosts (namespace, port, HAProxy, Keepalived), or repairs or updates it in
 * place (HAProxy reloads without dropping connections); planned after the network's bridge exists.
 */
export interface LbEnsureStep {
  kind: 'lb.create' | 'lb.update';
  host: string;
  lb: LbConfig;
  configHash: string;
  reason: string;
}

/** Removes a load balancer from a host (Keepalived hands the VIP over first); planned before its network goes. */
export interface LbDeleteStep {
  kind: 'lb.delete';
  host: string;
  name: string;
  reason: string;
}

/** One plan step. */
export type Step =
  | LbEnsureStep
  | LbDeleteStep
  | PoolEnsureStep
  | PoolDeleteStep
  | VolumeCreateStep
  | VolumeResizeStep
  | VolumeDeleteStep
  | UplinkConfigureStep
  | TuningConfigureStep
  | NetworkEnsureStep
  | NetworkDeleteStep
  | SecurityGroupEnsureStep
  | SecurityGroupDeleteStep
  | VmCreateStep
  | VmHotplugStep
  | VmNamedStep
  | VmStopStep;

/** Kinds of `Step`. */
export type StepKind = Step['kind'];

/** An ordered list of steps, and the objects (`network NAME on HOST`, `vm NAME on HOST`) left as they are. */
export interface Plan {
  steps: Step[];
  unchanged: string[];
  /** Data the plan leaves in place although the spec no longer names it (volumes), one sentence each. */
  kept?: string[];
}

/** Name of the object a step acts on (the uplink device for `uplink.configure`). */
export function stepTarget(step: Step): string {
  switch (step.kind) {
    case 'uplink.configure':
      return step.uplink.device;
    case 'tuning.configure':
      return 'tuning';
    case 'pool.create':
    case 'pool.update':
    case 'pool.delete':
      return step.pool.name;
    case 'volume.create':
      return `${step.volume.pool}/${step.volume.name}`;
    case 'volume.resize':
    case 'volume.delete':
      return `${step.pool}/${step.name}`;
  }
  if ('lb' in step) return step.lb.name;
  if ('network' in step) return step.network.name;
  if ('group' in step) return step.group.name;
  if ('vm' in step) return step.vm.name;
  return step.name;
}
