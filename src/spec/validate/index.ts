// Semantic validation: everything the schema cannot see on its own (names across lists, references,
// address plans, port forwards, the lab). Pure; returns every issue instead of stopping at the first.
// One module per concern beside this one; checks against live hosts are admission (../admission.ts).
//
// The checks run in a fixed order as steps. A step marked `placed` reads where VMs run (`vms[].host`, `placedBy`);
// every other step sees only what the spec's text says, so its issues are the same for every placement of one text:
// `validateSpecWith` keeps them in a memo, and a new placement of the same text (an owner record moved: an HA restart,
// a migration) runs only the placed steps again. validate.test.ts holds the unplaced steps to that (a VM's placement
// read there throws).
import type { SpecIssue } from '../../shared/errors.js';
import type { Spec } from '../schema.js';
import type { SubnetPlan } from './addressing.js';
import { checkSubnets } from './addressing.js';
import { checkAlerts } from './alerts.js';
import { checkBackups } from './backups.js';
import { checkCluster } from './cluster.js';
import type { Add } from './common.js';
import { checkBridges, checkHosts } from './hosts.js';
import { checkLab, type LabPlan } from './lab.js';
import { checkLoadBalancers } from './lb.js';
import { checkDuplicates, checkHostReferences } from './names.js';
import { checkMultiHost, checkSite } from './overlays.js';
import { checkSecurityGroups } from './security-groups.js';
import { checkStorage } from './storage.js';
import { checkVmResources } from './vm-resources.js';
import { checkForwards, checkNics } from './vms.js';

/** What the steps share: the spec's name indexes and what earlier steps derived. */
export interface ValidationContext {
  spec: Spec;
  hostIdx: Map<string, number>;
  netIdx: Map<string, number>;
  vmIdx: Map<string, number>;
  lab?: LabPlan | undefined;
  plans?: Map<string, SubnetPlan>;
}

export interface ValidationStep {
  name: string;
  /** Reads where VMs run: run again for every placement. */
  placed: boolean;
  run(ctx: ValidationContext, add: Add): void;
}

/** The steps, in the order their issues are reported. */
export const VALIDATION_STEPS: readonly ValidationStep[] = [
  { name: 'duplicates', placed: false, run: (c, add) => checkDuplicates(c.spec, add) },
  { name: 'host-references', placed: true, run: (c, add) => checkHostReferences(c.spec, c.hostIdx, add) },
  {
    name: 'lab',
    placed: false,
    run: (c, add) => {
      c.lab = checkLab(c.spec, add);
    },
  },
  { name: 'site', placed: false, run: (c, add) => checkSite(c.spec, add) },
  { name: 'hosts', placed: false, run: (c, add) => checkHosts(c.spec, c.hostIdx, add) },
  { name: 'multi-host', placed: false, run: (c, add) => checkMultiHost(c.spec, c.hostIdx, add) },
  {
    name: 'subnets',
    placed: false,
    run: (c, add) => {
      c.plans = checkSubnets(c.spec, c.lab, add);
    },
  },
  { name: 'bridges', placed: false, run: (c, add) => checkBridges(c.spec, add) },
  {
    name: 'nics',
    placed: true,
    run: (c, add) => checkNics(c.spec, c.netIdx, c.vmIdx, c.plans ?? new Map(), c.lab, add),
  },
  { name: 'forwards', placed: false, run: (c, add) => checkForwards(c.spec, c.vmIdx, add) },
  { name: 'security-groups', placed: false, run: (c, add) => checkSecurityGroups(c.spec, add) },
  { name: 'storage', placed: true, run: (c, add) => checkStorage(c.spec, c.hostIdx, add) },
  { name: 'cluster', placed: true, run: (c, add) => checkCluster(c.spec, c.hostIdx, add) },
  { name: 'backups', placed: true, run: (c, add) => checkBackups(c.spec, c.hostIdx, add) },
  { name: 'alerts', placed: false, run: (c, add) => checkAlerts(c.spec, add) },
  { name: 'vm-resources', placed: false, run: (c, add) => checkVmResources(c.spec, add) },
  { name: 'load-balancers', placed: false, run: (c, add) => checkLoadBalancers(c.spec, add) },
];

/**
 * What the unplaced steps found for one spec text: their issues and what they derived. Valid only for specs of that
 * same text (the caller keys it by text).
 */
export interface ValidationMemo {
  readonly steps: Map<string, SpecIssue[]>;
  lab?: LabPlan | undefined;
  plans?: Map<string, SubnetPlan>;
}

/** Returns every semantic problem of a schema-valid spec (empty when the spec is sound). */
export function validateSpec(spec: Spec): SpecIssue[] {
  return validateSpecWith(spec).issues;
}

/**
 * `validateSpec`, taking the unplaced steps' results from `memo` where it has them (a memo made for another
 * placement of the same text) and recording them there where it has not; the issues are the same, in the same order,
 * as a whole validation's.
 */
export function validateSpecWith(
  spec: Spec,
  memo: ValidationMemo = { steps: new Map() },
): { issues: SpecIssue[]; memo: ValidationMemo } {
  const issues: SpecIssue[] = [];
  const ctx = validationContext(spec);
  if (memo.steps.size) {
    ctx.lab = memo.lab;
    if (memo.plans) ctx.plans = memo.plans;
  }
  for (const step of VALIDATION_STEPS) {
    const kept = step.placed ? undefined : memo.steps.get(step.name);
    if (kept) {
      issues.push(...kept);
      continue;
    }
    const found: SpecIssue[] = [];
    step.run(ctx, (path, message) => found.push({ path, message }));
    issues.push(...found);
    if (!step.placed) memo.steps.set(step.name, found);
  }
  memo.lab = ctx.lab;
  if (ctx.plans) memo.plans = ctx.plans;
  return { issues, memo };
}

/** A fresh context for `spec`'s steps: its name indexes. */
export function validationContext(spec: Spec): ValidationContext {
  const hostIdx = new Map(spec.hosts.map((h, i) => [h.name, i] as const));
  const netIdx = new Map<string, number>();
  spec.networks.forEach((n, i) => {
    if (!netIdx.has(n.name)) netIdx.set(n.name, i);
  });
  const vmIdx = new Map<string, number>();
  spec.vms.forEach((v, i) => {
    if (!vmIdx.has(v.name)) vmIdx.set(v.name, i);
  });
  return { spec, hostIdx, netIdx, vmIdx };
}
