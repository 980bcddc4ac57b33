// Semantic validation: everything the schema cannot see on its own (names across lists, references,
// address plans, port forwards, the lab). Pure; returns every issue instead of stopping at the first.
// One module per concern beside this one; checks against live hosts are admission (../admission.ts).
import type { SpecIssue } from '../../shared/errors.js';
import type { Spec } from '../schema.js';
import { checkSubnets } from './addressing.js';
import { checkAlerts } from './alerts.js';
import { checkBackups } from './backups.js';
import { checkCluster } from './cluster.js';
import { checkBridges, checkHosts } from './hosts.js';
import { checkLab } from './lab.js';
import { checkLoadBalancers } from './lb.js';
import { checkDuplicates, checkHostReferences } from './names.js';
import { checkMultiHost, checkSite } from './overlays.js';
import { checkSecurityGroups } from './security-groups.js';
import { checkStorage } from './storage.js';
import { checkVmResources } from './vm-resources.js';
import { checkForwards, checkNics } from './vms.js';

/** Returns every semantic problem of a schema-valid spec (empty when the spec is sound). */
export function validateSpec(spec: Spec): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const add = (path: string, message: string) => issues.push({ path, message });

  checkDuplicates(spec, add);

  const hostIdx = new Map(spec.hosts.map((h, i) => [h.name, i] as const));
  const netIdx = new Map<string, number>();
  spec.networks.forEach((n, i) => {
    if (!netIdx.has(n.name)) netIdx.set(n.name, i);
  });
  const vmIdx = new Map<string, number>();
  spec.vms.forEach((v, i) => {
    if (!vmIdx.has(v.name)) vmIdx.set(v.name, i);
  });

  checkHostReferences(spec, hostIdx, add);

  const lab = checkLab(spec, add);
  checkSite(spec, add);
  checkHosts(spec, hostIdx, add);
  checkMultiHost(spec, hostIdx, add);
  const plans = checkSubnets(spec, lab, add);
  checkBridges(spec, add);
  checkNics(spec, netIdx, vmIdx, plans, lab, add);
  checkForwards(spec, vmIdx, add);
  checkSecurityGroups(spec, add);
  checkStorage(spec, hostIdx, add);
  checkCluster(spec, hostIdx, add);
  checkBackups(spec, hostIdx, add);
  checkAlerts(spec, add);
  checkVmResources(spec, add);
  checkLoadBalancers(spec, add);
  return issues;
}
