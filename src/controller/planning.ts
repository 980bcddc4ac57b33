// Planning against the hosts: gather their reports, check capacity and support, diff, and say what would be lost.

import { analyzeDestruction, type DestroyAnalysis, formatLoss, type Loss } from '../plan/destroy.js';
import { planChanges } from '../plan/diff.js';
import { formatPlan, summarizePlan } from '../plan/format.js';
import { resolveLoadBalancers } from '../plan/lb.js';
import { checkHostPassthrough } from '../plan/passthrough.js';
import { type DesiredState, resolveSpec, resolveUplinks } from '../plan/resolve.js';
import type { Plan } from '../plan/steps.js';
import { checkDevicesAgainstHosts, checkNamedVolumes, checkPoolCapacity } from '../plan/storage-checks.js';
import { resolveTunings } from '../plan/tuning.js';
import { ConflictError, InvalidSpecError } from '../shared/errors.js';
import type { HostReport, UplinkConfig } from '../shared/model.js';
import { admitSpec } from '../spec/admission.js';
import type { Spec } from '../spec/schema.js';
import { restoredVmSet } from './backup/records.js';
import { type AgentFactory, gatherReports, REPORT_TIMEOUT_MS } from './hosts.js';
import { hostHealth } from './monitor.js';
import { missingSecretIssues } from './secrets/usage.js';
import { storedSecretNames } from './secrets/vault.js';
import type { Store } from './store/types.js';
import { DESTRUCTIVE_PLAN_SUBJECT } from './wire.js';

/** A computed plan with its rendering and what it would destroy. */
export interface PlanResult extends DestroyAnalysis {
  plan: Plan;
  text: string;
  summary: ReturnType<typeof summarizePlan>;
}

/** What planning needs besides the spec. */
export interface PlanInputs {
  /** Check the spec against the hosts' capacity and support (not for destroy). */
  checkCaps: boolean;
  /** The spec applied before: hosts it has and `spec` drops are emptied where they answer. */
  previous?: Spec | undefined;
  /** The state applied until now as far as known (what a deletion loses). */
  before: DesiredState;
  /** VMs whose deletion is refused. */
  protectedVms: ReadonlySet<string>;
  /**
   * Cluster hosts without a live lease ("failed"): not asked for reports, their steps dropped and named in the
   * plan as skipped; everything else proceeds.
   */
  failedHosts?: ReadonlySet<string>;
  /** Keep only these hosts' steps (an HA reconcile of the hosts it moved VMs to). */
  onlyHosts?: ReadonlySet<string>;
  /**
   * A cluster's stale copies: `vm` on `host` while its owner record names another host (HA restarted it elsewhere
   * and this host's agent fenced it). Deleting one is no loss: it is listed as a notice instead.
   */
  staleCopy?: (vm: string, host: string) => boolean;
  /** Lines put before the plan (placement in a cluster). */
  preface?: string[];
}

/** An apply would destroy data and was not allowed to: nothing was changed. */
export class DestructivePlanError extends ConflictError {
  readonly losses: Loss[];
  constructor(losses: Loss[]) {
    super(
      `this apply would destroy:\n${losses.map((l) => `  - ${formatLoss(l)}`).join('\n')}\nNothing was changed. Apply again with --allow-destroy to go ahead.`,
      DESTRUCTIVE_PLAN_SUBJECT,
    );
    this.losses = losses;
  }
}

/** Plans `desired` (resolved from `spec`) against what the hosts report; see `PlanInputs`. */
export async function planAgainstHosts(
  store: Store,
  agents: AgentFactory,
  spec: Spec,
  desired: DesiredState,
  inputs: PlanInputs,
): Promise<PlanResult> {
  const health = await hostHealth(store);
  const notes = Object.fromEntries(
    Object.entries(health)
      .filter(([, h]) => h.state === 'unreachable')
      .map(([name, h]) => [name, `unreachable since ${h.since}, last seen ${h.lastSeen ?? 'never'}`]),
  );
  const failed = inputs.failedHosts ?? new Set<string>();
  const asked = failed.size ? { ...spec, hosts: spec.hosts.filter((h) => !failed.has(h.name)) } : spec;
  const reports = await gatherReports(asked, agents, notes);
  if (inputs.checkCaps) {
    // Admission: the valid spec against what its hosts report (capacity, backends, kernel features).
    const issues = admitSpec(spec, Object.fromEntries(reports.map((r) => [r.host, r.capabilities])));
    // Secrets the spec names must exist (their values are not read to plan).
    issues.push(...missingSecretIssues(spec, await storedSecretNames(store)));
    // Storage and devices against what the hosts hold: imported volumes exist, pools stay within their
    // over-provisioning limit, passthrough requests pass the host's rules.
    issues.push(
      ...checkNamedVolumes(spec, reports),
      ...checkPoolCapacity(spec, desired, reports),
      ...checkDevicesAgainstHosts(spec, reports, checkHostPassthrough),
    );
    if (issues.length) throw new InvalidSpecError(issues);
  }
  // Hosts the previous spec had and this one drops: what runs there goes, if they answer.
  const { previous } = inputs;
  const kept = new Set(spec.hosts.map((h) => h.name));
  const dropped = (previous?.hosts ?? []).filter((h) => !kept.has(h.name));
  const notices: string[] = [...failed].map(
    (h) => `! host ${h} is failed (no live lease): skipped; its VMs run where HA restarts them`,
  );
  const removed = await Promise.all(
    dropped.map(async (h) => {
      try {
        return await agents(previous!, h.name).report(REPORT_TIMEOUT_MS);
      } catch (e) {
        notices.push(
          `! host ${h.name} left the spec but is unreachable (${(e as Error).message.split('\n')[0]}); its VMs and networks stay until it is back and you apply again.`,
        );
        return undefined;
      }
    }),
  );
  // VMs made by `restore --as` belong to no spec: the plan leaves them alone (`vmlink restore discard` removes them).
  const restored = await restoredVmSet(store);
  const observed = [...reports, ...removed.filter((r): r is HostReport => r !== undefined)].map((r) =>
    r.vms.some((v) => restored(v.name, r.host))
      ? { ...r, vms: r.vms.filter((v) => !restored(v.name, r.host)) }
      : r,
  );
  const uplinks: Record<string, UplinkConfig | undefined> = inputs.checkCaps ? resolveUplinks(spec) : {};
  // A destroy (no capability checks) plans every load balancer away, as it does networks and VMs.
  const all = planChanges(
    desired,
    observed,
    uplinks,
    inputs.checkCaps ? resolveTunings(spec) : {},
    inputs.checkCaps ? resolveLoadBalancers(spec) : {},
  );
  const plan =
    failed.size || inputs.onlyHosts
      ? {
          ...all,
          steps: all.steps.filter((s) => !failed.has(s.host) && (inputs.onlyHosts?.has(s.host) ?? true)),
        }
      : all;
  const found = analyzeDestruction(plan, withObservedVms(inputs.before, observed), inputs.protectedVms);
  const stale = inputs.staleCopy ?? (() => false);
  const analysis: DestroyAnalysis = {
    ...found,
    losses: found.losses.filter((l) => l.kind !== 'vm' || !stale(l.name, l.host)),
    protectedDeletions: found.protectedDeletions.filter((p) => !stale(p.name, p.host)),
  };
  for (const s of plan.steps)
    if (s.kind === 'vm.delete' && stale(s.name, s.host))
      notices.push(
        `- vm ${s.name} on ${s.host}: a stale copy (its owner record names another host), removed`,
      );
  const text = renderPlan(plan, analysis, notices);
  return {
    plan,
    text: inputs.preface?.length ? `${inputs.preface.join('\n')}\n${text}` : text,
    summary: summarizePlan(plan),
    ...analysis,
  };
}

/** The plan's text: its steps, notices, the disks it keeps, and what it destroys. */
function renderPlan(plan: Plan, a: DestroyAnalysis, notices: string[]): string {
  const lines = [formatPlan(plan), ...notices, ...a.kept.map((k) => `= ${k}`)];
  if (a.losses.length) lines.push('', 'This plan destroys:', ...a.losses.map((l) => `  - ${formatLoss(l)}`));
  for (const p of a.protectedDeletions)
    lines.push(
      `! vm ${p.name} on ${p.host} is protected: apply refuses to delete it (set protected: false first)`,
    );
  return lines.join('\n');
}

/** The state `specs` describe together (first one first for a VM or network both name): what deletions lose. */
export function knownState(specs: Array<Spec | undefined>): DesiredState {
  const out: DesiredState = {};
  for (const spec of specs) {
    if (!spec) continue;
    for (const [host, d] of Object.entries(resolveSpec(spec))) {
      const have = out[host] ?? { networks: [], vms: [] };
      out[host] = have;
      for (const n of d.networks) if (!have.networks.some((x) => x.name === n.name)) have.networks.push(n);
      for (const v of d.vms) if (!have.vms.some((x) => x.name === v.name)) have.vms.push(v);
    }
  }
  return out;
}

/** `state` with each VM replaced by the config its host reports it was created from (the truth about its disks). */
function withObservedVms(state: DesiredState, reports: HostReport[]): DesiredState {
  const out: DesiredState = { ...state };
  for (const r of reports) {
    const seen = r.vms.flatMap((v) => (v.config ? [v.config] : []));
    if (!seen.length) continue;
    const have = out[r.host] ?? { networks: [], vms: [] };
    const names = new Set(seen.map((v) => v.name));
    out[r.host] = { ...have, vms: [...have.vms.filter((v) => !names.has(v.name)), ...seen] };
  }
  return out;
}

/** Names of the VMs any of `specs` marks `protected: true`. */
export function protectedVms(specs: Array<Spec | undefined>): Set<string> {
  return new Set(specs.flatMap((s) => (s?.vms ?? []).filter((v) => v.protected).map((v) => v.name)));
}

/**
 * Refuses a plan that deletes a protected VM (always) or destroys anything at all (unless `allowDestroy`), before
 * any step runs.
 */
export function refuseDestruction(result: PlanResult, allowDestroy: boolean): void {
  const [first, ...more] = result.protectedDeletions;
  if (first) {
    const names = [first, ...more].map((p) => `vm ${p.name} on ${p.host}`).join(', ');
    throw new ConflictError(
      `${names} ${more.length ? 'are' : 'is'} protected (protected: true in the spec) and would be deleted with ${more.length ? 'their' : 'its'} disks; nothing was changed. To delete ${more.length ? 'them' : 'it'}, first apply the spec with protected: false on ${more.length ? 'each' : 'it'}, then apply or destroy again.`,
      `vm/${first.name}`,
    );
  }
  if (result.losses.length && !allowDestroy) throw new DestructivePlanError(result.losses);
}
