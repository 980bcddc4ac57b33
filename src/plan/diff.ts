// The diff: desired configs vs what agents report -> ordered steps that converge them.

import { CONFIRM_WINDOW_MS } from '../shared/limits.js';
import type {
  HostReport,
  NetworkConfig,
  ObservedNetwork,
  ObservedSecurityGroup,
  ObservedVm,
} from '../shared/model.js';
import type { SecurityGroupConfig } from '../shared/security-groups.js';
import { legacyOvsVlanBridgeName, ovsVlanBridgeName } from '../spec/net.js';
import { allLive, formatChange, networkFieldChanges, vmChangesAsApplied, vmFieldChanges } from './changes.js';
import { adoptObservedBridges, canonicalNetworkNames, canonicalVmNames } from './device-names.js';
import { diskMoveRefusals, realisedAs, refuseDiskMoves } from './disk-moves.js';
import { networkConfigHash, securityGroupConfigHash, uplinkConfigHash, vmConfigHash } from './hash.js';
import { type DesiredLoadBalancers, planLoadBalancers } from './lb.js';
import type { DesiredState, DesiredUplinks } from './resolve.js';
import { securityGroupChanges } from './security-group-changes.js';
import { type Plan, type RiskyMark, type Step, stepTarget } from './steps.js';
import { planStorage } from './storage-changes.js';
import { type DesiredTunings, planTuning } from './tuning.js';

/** Commit-confirm window of risky steps on a host whose desired state does not say (spec default: 60 s). */
export const DEFAULT_CONFIRM_TIMEOUT_MS = CONFIRM_WINDOW_MS;

// Dependency order: networks exist before VMs attach, old VMs go before new ones start (no VM runs
// twice when it moves), networks go last when their VMs are gone.
// The uplink comes first: jumbo frames must be on the underlay before overlays that need them. Security groups
// exist (and their members are current) before the ports that use them are made or changed; a group goes once
// the ports that used it are gone or changed.
// Pools exist before their volumes, volumes before the VMs that open them; a VM's own volumes go after the VM, and
// a pool after its volumes. A volume grown online goes through its running VM, after the starts.
const phase: Record<Step['kind'], number> = {
  'uplink.configure': -1,
  'tuning.configure': -1,
  'pool.create': 0,
  'pool.update': 0,
  'volume.create': 0.5,
  'volume.resize': 3.5,
  'volume.delete': 4.5,
  'pool.delete': 5,
  'network.create': 0,
  'network.update': 0,
  'securityGroup.create': 0,
  'securityGroup.update': 0,
  'securityGroup.delete': 4,
  'vm.stop': 1,
  'vm.delete': 1,
  'vm.create': 2,
  'vm.update': 2,
  'vm.hotplug': 2,
  'vm.start': 3,
  'network.delete': 4,
  // Load balancers join their network's bridge (made in phase 0) and leave it before it goes (phase 4).
  'lb.create': 0.8,
  'lb.update': 0.8,
  'lb.delete': 1,
};
/**
 * The dependency phase of a step: steps of one phase on different hosts do not depend on each other. Clones are
 * made after the volumes they copy; a volume grown offline is grown while its VM is stopped (after the stops,
 * before the creates and starts), one grown online through its running VM.
 */
export const stepPhase = (s: Step): number => {
  if (s.kind === 'volume.create' && s.volume.from) return 0.6;
  if (s.kind === 'volume.resize' && !s.vm) return 1.5;
  return phase[s.kind];
};

// Within one VM in phase 1: stop before delete.
const within: Partial<Record<Step['kind'], number>> = { 'vm.stop': 0, 'vm.delete': 1 };

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

// Within a host's phase: security groups after networks, so that the agent's runs of network steps (one bulk
// call each) stay whole; pools after both.
const kindOrder: Partial<Record<Step['kind'], number>> = {
  'tuning.configure': 1,
  'securityGroup.create': 1,
  'securityGroup.update': 1,
  'securityGroup.delete': 1,
  'pool.create': 2,
  'pool.update': 2,
};

/** Sorts steps into dependency order, then by host and object name; stable and deterministic. */
export function orderSteps(steps: Step[]): Step[] {
  return [...steps].sort(
    (a, b) =>
      stepPhase(a) - stepPhase(b) ||
      cmp(a.host, b.host) ||
      (kindOrder[a.kind] ?? 0) - (kindOrder[b.kind] ?? 0) ||
      cmp(stepTarget(a), stepTarget(b)) ||
      (within[a.kind] ?? 0) - (within[b.kind] ?? 0),
  );
}

/** Whether realising `net` enslaves or reconfigures the host uplink `uplink` (so it may cut the host off). */
export function touchesUplink(net: NetworkConfig, uplink: string | undefined): boolean {
  if (uplink === undefined) return false;
  if (net.mode === 'bridge') return net.uplink === uplink;
  // OVS takes the NIC into an OVS bridge: the trunk NIC for vlan, the underlay for vxlan (userspace datapath).
  if (net.backend !== 'ovs') return false;
  if (net.mode === 'vlan') return net.vlan?.trunk === uplink;
  if (net.mode === 'vxlan') return net.vxlan?.underlay === uplink;
  return false;
}

/**
 * Plans the steps that bring `observed` to `desired`. A desired host missing from `observed` counts as
 * empty; an observed host missing from `desired` has everything on it deleted (its uplink is left alone).
 * `uplinks` (see `resolveUplinks`) adds an `uplink.configure` step first on each host whose reported uplink
 * hash differs, and `tunings` (see `resolveTunings`) a `tuning.configure` step where the host's TCP tuning drifts
 * from it. Steps that touch a host's uplink are marked `risky` with the host's commit-confirm window.
 * `loadBalancers` (see `resolveLoadBalancers`) adds the LB steps; absent, reported LBs are left alone (hand-built
 * states), an empty record deletes every LB (a destroy).
 */
export function planChanges(
  desired: DesiredState,
  observed: HostReport[],
  uplinks?: DesiredUplinks,
  tunings?: DesiredTunings,
  loadBalancers?: DesiredLoadBalancers,
): Plan {
  const steps: Step[] = [];
  const unchanged: string[] = [];
  const diskRefusals: string[] = [];
  const obsByHost = new Map<string, HostReport>();
  for (const r of observed) obsByHost.set(r.host, r);
  const hosts = [...new Set([...Object.keys(desired), ...obsByHost.keys()])].sort(cmp);

  for (const host of hosts) {
    const seen = obsByHost.get(host);
    const want = adoptObservedBridges(desired[host] ?? { networks: [], vms: [] }, seen);
    const obsNets = new Map<string, ObservedNetwork>((seen?.networks ?? []).map((n) => [n.name, n]));
    const obsVms = new Map<string, ObservedVm>((seen?.vms ?? []).map((v) => [v.name, v]));
    const confirmTimeoutMs = want.confirmTimeoutMs ?? DEFAULT_CONFIRM_TIMEOUT_MS;
    const uplinkDev = want.uplinkDevice ?? uplinks?.[host]?.device ?? seen?.uplink?.device;
    const risky = (yes: boolean): RiskyMark => (yes ? { risky: true, confirmTimeoutMs } : {});
    // An observed network whose bridge carries the management address, or the OVS bridge of the uplink.
    const obsTouches = (o: ObservedNetwork | undefined) =>
      o !== undefined &&
      ((seen?.uplink !== undefined && o.bridge === seen.uplink.addressDevice) ||
        (uplinkDev !== undefined &&
          (o.bridge === ovsVlanBridgeName(uplinkDev) || o.bridge === legacyOvsVlanBridgeName(uplinkDev))));

    const uplink = uplinks?.[host];
    if (uplink && desired[host]) {
      const hash = uplinkConfigHash(uplink);
      const o = seen?.uplink;
      if (o?.configHash === hash) unchanged.push(`uplink of ${host}`);
      else
        steps.push({
          kind: 'uplink.configure',
          host,
          uplink,
          configHash: hash,
          reason: !o
            ? 'not reported by the host'
            : o.configHash === undefined
              ? 'not configured by vmlink yet'
              : 'configuration changed',
          risky: true,
          confirmTimeoutMs,
        });
    }

    // Tuning is compared field by field with what the host reports (drift), not by a hash of what vmlink applied.
    const tuning = tunings?.[host];
    if (tuning && desired[host]) {
      const step = planTuning(host, tuning, seen?.capabilities.tuning, confirmTimeoutMs);
      if (step) steps.push(step);
      else unchanged.push(`tuning of ${host}`);
    }

    planSecurityGroups(host, want.securityGroups ?? [], seen?.securityGroups ?? [], steps, unchanged);
    if (loadBalancers)
      planLoadBalancers(host, loadBalancers[host] ?? [], seen?.loadBalancers ?? [], steps, unchanged);

    for (const net of want.networks) {
      const hash = networkConfigHash(net);
      const o = obsNets.get(net.name);
      const mark = risky(touchesUplink(net, uplinkDev) || obsTouches(o));
      if (!o) {
        steps.push({
          kind: 'network.create',
          host,
          network: net,
          configHash: hash,
          reason: 'not on the host',
          ...mark,
        });
      } else if (o.problems.length > 0) {
        steps.push({
          kind: 'network.update',
          host,
          network: net,
          configHash: hash,
          reason: `repair: ${o.problems.join('; ')}`,
          ...mark,
        });
      } else if (o.configHash !== hash) {
        // Hashed and readable device names of the same object are no change (see device-names.ts).
        const changes = o.config
          ? networkFieldChanges(canonicalNetworkNames(o.config), canonicalNetworkNames(net))
          : [];
        steps.push({
          kind: 'network.update',
          host,
          network: net,
          configHash: hash,
          reason: 'configuration changed',
          ...(changes.length ? { changes: changes.map(formatChange) } : {}),
          ...mark,
        });
      } else {
        unchanged.push(`network ${net.name} on ${host}`);
      }
    }
    const wantNets = new Set(want.networks.map((n) => n.name));
    for (const o of obsNets.values()) {
      if (!wantNets.has(o.name))
        steps.push({
          kind: 'network.delete',
          host,
          name: o.name,
          reason: 'not in the spec',
          ...risky(obsTouches(o)),
        });
    }

    for (const vm of want.vms) {
      const hash = vmConfigHash(vm);
      const o = obsVms.get(vm.name);
      const name = vm.name;
      const create = (reason: string) => {
        steps.push({ kind: 'vm.create', host, vm, configHash: hash, reason });
        if (vm.state === 'running')
          steps.push({ kind: 'vm.start', host, name, reason: 'desired state is running' });
      };
      if (!o) {
        create('not on the host');
        continue;
      }
      // A VM is never deleted to change or repair it: its disks live in its directory. NIC changes of a running VM
      // are hot-plugged; any other change is applied in place while it is stopped; detached ports are re-attached
      // while it runs; a crashed one is started again.
      const portProblems = o.problems.filter((p) => p.startsWith('port '));
      const fields = o.config ? vmFieldChanges(canonicalVmNames(o.config), canonicalVmNames(vm)) : undefined;
      const running = o.state === 'running' && vm.state === 'running';
      // A disk moved live (`vm move-disk`) keeps the old hash: the recorded config decides (disk-moves.ts).
      const changed = !realisedAs(o, hash);
      if (changed) diskRefusals.push(...diskMoveRefusals(host, vm, o));
      if (changed && running && fields && allLive(fields)) {
        steps.push({
          kind: 'vm.hotplug',
          host,
          vm,
          configHash: hash,
          reason: 'configuration changed',
          changes: fields.map(formatChange),
        });
      } else if (changed) {
        const applied = fields
          ? vmChangesAsApplied(fields, o.state !== 'stopped' && vm.state === 'running')
          : [];
        const changes = applied.length ? { changes: applied.map(formatChange) } : {};
        if (o.state !== 'stopped')
          steps.push({
            kind: 'vm.stop',
            host,
            name,
            force: o.state === 'crashed',
            reason: 'configuration changed',
          });
        steps.push({
          kind: 'vm.update',
          host,
          vm,
          configHash: hash,
          reason: 'configuration changed',
          ...changes,
        });
        if (vm.state === 'running')
          steps.push({ kind: 'vm.start', host, name, reason: 'desired state is running' });
      } else if (portProblems.length > 0) {
        steps.push({
          kind: 'vm.update',
          host,
          vm,
          configHash: hash,
          reason: `repair: ${portProblems.join('; ')}`,
        });
        if (vm.state === 'running' && o.state !== 'running')
          steps.push({
            kind: 'vm.start',
            host,
            name,
            reason: `desired state is running, observed ${o.state}`,
          });
      } else if (vm.state === 'running' && o.state !== 'running') {
        steps.push({ kind: 'vm.start', host, name, reason: `desired state is running, observed ${o.state}` });
      } else if (vm.state === 'stopped' && o.state !== 'stopped') {
        // A crashed guest will not answer ACPI: stop it at once.
        steps.push({
          kind: 'vm.stop',
          host,
          name,
          force: o.state === 'crashed',
          reason: `desired state is stopped, observed ${o.state}`,
        });
      } else {
        unchanged.push(`vm ${vm.name} on ${host}`);
      }
    }
    const wantVms = new Set(want.vms.map((v) => v.name));
    for (const o of obsVms.values()) {
      if (!wantVms.has(o.name))
        steps.push({ kind: 'vm.delete', host, name: o.name, reason: 'not in the spec' });
    }
  }
  refuseDiskMoves(diskRefusals);
  // Storage spans hosts (a VM on one opens a volume of a pool on another): planned once over all of them.
  const storage = planStorage(desired, observed, steps);
  steps.push(...storage.steps);
  unchanged.push(...storage.unchanged);
  return {
    steps: orderSteps(steps),
    unchanged: unchanged.sort(cmp),
    ...(storage.kept.length ? { kept: storage.kept } : {}),
  };
}

/** Steps that bring a host's security groups to `want`: create the missing, update the changed, delete the rest. */
function planSecurityGroups(
  host: string,
  want: readonly SecurityGroupConfig[],
  seen: readonly ObservedSecurityGroup[],
  steps: Step[],
  unchanged: string[],
): void {
  const observed = new Map(seen.map((g) => [g.name, g]));
  for (const group of want) {
    const configHash = securityGroupConfigHash(group);
    const o = observed.get(group.name);
    if (!o) {
      steps.push({ kind: 'securityGroup.create', host, group, configHash, reason: 'not on the host' });
    } else if (o.problems.length > 0) {
      steps.push({
        kind: 'securityGroup.update',
        host,
        group,
        configHash,
        reason: `repair: ${o.problems.join('; ')}`,
      });
    } else if (o.configHash !== configHash) {
      const changes = o.config ? securityGroupChanges(o.config, group) : [];
      steps.push({
        kind: 'securityGroup.update',
        host,
        group,
        configHash,
        reason: 'configuration changed',
        ...(changes.length ? { changes } : {}),
      });
    } else {
      unchanged.push(`securityGroup ${group.name} on ${host}`);
    }
  }
  const wanted = new Set(want.map((g) => g.name));
  for (const o of seen)
    if (!wanted.has(o.name))
      steps.push({ kind: 'securityGroup.delete', host, name: o.name, reason: 'no NIC on the host uses it' });
}
