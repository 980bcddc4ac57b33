// Plan, apply, reconcile, destroy: the Deployer plans against the hosts (placing VMs in a cluster first) and runs
// the plan (execute-plan.ts).
import { formatLoss } from '../plan/destroy.js';
import { type DesiredState, resolveSpec } from '../plan/resolve.js';
import { admissionIssues, scheduleVms } from '../plan/scheduler.js';
import {
  type MaintenanceRecord,
  maintenanceKey,
  type OwnedVm,
  type UserStopRecord,
  userStopKey,
} from '../shared/cluster.js';
import { ConflictError, InvalidRequestError, InvalidSpecError } from '../shared/errors.js';
import { OWNER_WRITE_CONCURRENCY } from '../shared/limits.js';
import { mapLimited } from '../shared/queue.js';
import type { HostCapacity } from '../spec/admission.js';
import { placementFromOwners } from '../spec/placement.js';
import type { Spec } from '../spec/schema.js';
import type { ConfirmTiming } from './confirm.js';
import { type ExecuteContext, executePlan } from './execute-plan.js';
import type { AgentFactory } from './hosts.js';
import {
  type ClusterPlacement,
  hintsOf,
  type OwnershipStore,
  planOwners,
  unplacedView,
} from './ownership.js';
import {
  DestructivePlanError,
  knownState,
  type PlanResult,
  planAgainstHosts,
  protectedVms,
  refuseDestruction,
} from './planning.js';
import type { SpecStore } from './spec-store.js';
import type { Store } from './store/types.js';
import type { TaskContext } from './tasks.js';

/** Options of `apply`. */
export interface ApplyOptions {
  /** Go ahead although the plan deletes VMs, their disks or networks VMs use (never protected VMs). */
  allowDestroy?: boolean;
}

/** What plan, apply and destroy need. */
export interface DeployDeps {
  store: Store;
  specs: SpecStore;
  agents: AgentFactory;
  confirmTiming?: ConfirmTiming;
  /** A cluster's owner records (placement, fencing tokens); needed for specs with `cluster:`. */
  ownership?: OwnershipStore;
  /** The hosts holding a live lease now (a cluster's coordination); undefined: no cluster, no host is failed. */
  liveHosts?: () => Promise<ReadonlySet<string> | undefined>;
  /** Prepares a cluster spec's etcd before its steps run (host users and roles, the agents' membership). */
  prepareCluster?: (spec: Spec) => Promise<string>;
  /** Fences a VM's volumes to its new owner (storage-side fencing) before it starts there. */
  fenceVolumes?: (spec: Spec, vm: string, owner: OwnedVm) => Promise<unknown>;
}

/** Options of `Deployer.reconcile`. */
export interface ReconcileOptions {
  /** Only these hosts' steps (an HA restart reconciles the hosts it moved VMs to). */
  hosts?: readonly string[];
  /** VMs kept stopped besides user-stopped ones (HA policy `stopped`). */
  keepStopped?: ReadonlySet<string>;
}

/** Plans, applies and destroys specs; the stored spec records what was applied. */
export class Deployer {
  private queue: Promise<unknown> = Promise.resolve();
  constructor(private readonly d: DeployDeps) {}

  /** Validates `text` and diffs it against what the hosts report. */
  async plan(text: string, source: string): Promise<PlanResult> {
    const raw = this.d.specs.parser.parse(text, source);
    const placing = await this.placeCluster(raw, text, source);
    return this.planCluster(placing?.spec ?? raw, await this.history(), placing);
  }

  /**
   * Plans and applies `text`, step by step in plan order; the next apply converges from any failure. A plan that
   * destroys data is refused before any change unless `allowDestroy`; one that deletes a protected VM always.
   */
  async apply(
    text: string,
    source: string,
    ctx: TaskContext,
    opts: ApplyOptions = {},
  ): Promise<PlanResult & { applied: number }> {
    return this.serial(() => this.applyNow(text, source, ctx, opts));
  }

  private async applyNow(
    text: string,
    source: string,
    ctx: TaskContext,
    opts: ApplyOptions,
  ): Promise<PlanResult & { applied: number }> {
    const raw = this.d.specs.parser.parse(text, source);
    const history = await this.history();
    const placing = await this.placeCluster(raw, text, source);
    const spec = placing?.spec ?? raw;
    const result = await this.planCluster(spec, history, placing);
    ctx.progress(result.text);
    try {
      refuseDestruction(result, opts.allowDestroy ?? false);
    } catch (e) {
      const why =
        e instanceof DestructivePlanError
          ? `would destroy ${e.losses.map(formatLoss).join('; ')}`
          : (e as Error).message.split('\n')[0];
      await this.d.store.appendEvent('apply.refused', `${source}: ${why}`);
      throw e;
    }
    if (placing) {
      if (this.d.prepareCluster) ctx.progress(await this.d.prepareCluster(spec));
      await this.writeOwners(placing);
    }
    await this.d.specs.recordAttempt(text, source);
    const applied = await executePlan(result.plan, this.execution(spec, ctx, history.previous));
    await this.d.specs.recordSuccess(text, source);
    if (placing) await this.releaseDropped(placing, result.failedHosts);
    await this.d.store.appendEvent('apply', `${source}: ${applied} change(s) applied`);
    return { ...result, applied };
  }

  /**
   * Applies the current spec as owner records place it now (HA restarts, maintenance), failed hosts skipped and
   * user-stopped VMs kept stopped; serialized with applies. Stale copies of VMs owned elsewhere (a failed host that
   * returned) are deleted without `--allow-destroy`: their owner runs them elsewhere and the agent fenced them.
   */
  async reconcile(ctx: TaskContext, opts: ReconcileOptions = {}): Promise<PlanResult & { applied: number }> {
    return this.serial(async () => {
      const cur = await this.d.specs.current();
      if (!cur) throw new InvalidRequestError('nothing to reconcile: apply a spec first');
      const history = await this.history();
      const result = await this.planCluster(cur.spec, history, undefined, opts);
      refuseDestruction(result, false);
      const applied = await executePlan(result.plan, this.execution(result.spec, ctx, history.previous));
      return { ...result, applied };
    });
  }

  /**
   * Removes every VM and network of `text` (or of the last applied spec) from its hosts: the caller asked for the
   * destruction, but protected VMs are still refused.
   */
  async destroy(
    text: string | undefined,
    source: string,
    ctx: TaskContext,
  ): Promise<PlanResult & { applied: number }> {
    return this.serial(() => this.destroyNow(text, source, ctx));
  }

  private async destroyNow(
    text: string | undefined,
    source: string,
    ctx: TaskContext,
  ): Promise<PlanResult & { applied: number }> {
    // Without a spec text the stored one must parse; with one, a stored spec that no longer does is just unknown.
    const cur =
      text === undefined ? await this.d.specs.current() : await this.d.specs.current().catch(() => undefined);
    const spec = text === undefined ? cur?.spec : await this.d.specs.place(text, source);
    if (!spec)
      throw new InvalidRequestError('nothing to destroy: no spec was given and none has been applied');
    const empty: DesiredState = Object.fromEntries(
      spec.hosts.map((h) => [h.name, { networks: [], vms: [] }]),
    );
    const failedHosts = await this.failedHosts(spec);
    const result = await planAgainstHosts(this.d.store, this.d.agents, spec, empty, {
      checkCaps: false,
      before: knownState([spec, cur?.spec]),
      protectedVms: protectedVms([spec, cur?.spec]),
      failedHosts,
    });
    ctx.progress(result.text);
    refuseDestruction(result, true);
    const applied = await executePlan(result.plan, this.execution(spec, ctx));
    if (!cur || sameHosts(cur.spec, spec)) await this.d.specs.clear();
    // The destroyed VMs' owner records go with them (those on failed hosts stay until those return).
    if (spec.cluster && this.d.ownership) {
      const names = new Set(spec.vms.map((v) => v.name));
      for (const o of await this.d.ownership.list())
        if (names.has(o.vm) && !failedHosts.has(o.host)) await this.d.ownership.release(o.vm, o.token);
    }
    await this.d.store.appendEvent('destroy', `${source}: ${applied} change(s) applied`);
    return { ...result, applied };
  }

  /** The specs applied until now: the last good one (else the last attempted) and the last attempted. */
  private async history(): Promise<{ previous?: Spec | undefined; attempted?: Spec | undefined }> {
    return {
      previous: await this.d.specs.previous(),
      attempted: (await this.d.specs.current().catch(() => undefined))?.spec,
    };
  }

  /** Runs `f` after every apply, destroy and reconcile started before it (one changes hosts at a time). */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * A cluster spec's placement: owner records, else the spec's hosts, else the scheduler (live hosts out of
   * maintenance, by free memory and CPUs as the agents report them); undefined for other specs. Refuses (before any
   * change) a VM the scheduler finds no room for, and a placement admission control rejects
   * (`cluster.admission.hostFailures`).
   */
  private async placeCluster(raw: Spec, text: string, source: string): Promise<ClusterPlacement | undefined> {
    if (!raw.cluster || !this.d.ownership) return undefined;
    const owners = await this.d.ownership.list();
    const unplaced = unplacedView(raw);
    const known = placementFromOwners(unplaced, hintsOf(owners));
    const live = await this.d.liveHosts?.();
    const maintenance = new Set(
      (await this.d.store.list<MaintenanceRecord>(maintenanceKey(''))).map((r) => r.value.host),
    );
    const unscheduled = raw.vms.some((v) => !known[v.name] && v.specHost === undefined);
    const admission = (raw.cluster.admission.hostFailures ?? 0) > 0;
    const capacities = unscheduled || admission ? await this.reportedCapacities(raw, live) : {};
    const sched = scheduleVms({
      spec: unplaced,
      placed: known,
      hosts: raw.hosts
        .filter((h) => h.role !== 'storage')
        .map((h) => ({
          name: h.name,
          capacity: capacities[h.name],
          live: live ? live.has(h.name) : true,
          maintenance: maintenance.has(h.name),
        })),
      now: Date.now(),
    });
    const placement = { ...known, ...sched.placement };
    const issues = [...sched.issues, ...admissionIssues(unplaced, placement, capacities)];
    if (issues.length) {
      await this.d.store.appendEvent(
        'apply.refused',
        `${source}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`,
      );
      throw new InvalidSpecError(issues, source);
    }
    const why = Object.fromEntries(
      sched.decisions.flatMap((d) => (d.kind === 'place' && d.vm ? [[d.vm, d.reason]] : [])),
    );
    return planOwners(this.d.specs.parser.parse(text, source, placement), owners, why);
  }

  /** What each live compute host's agent reports it has for VMs (hosts that do not answer are left out). */
  private async reportedCapacities(
    spec: Spec,
    live: ReadonlySet<string> | undefined,
  ): Promise<Record<string, HostCapacity>> {
    const hosts = spec.hosts.filter((h) => h.role !== 'storage' && (!live || live.has(h.name)));
    const reports = await Promise.allSettled(hosts.map((h) => this.d.agents(spec, h.name).report()));
    return Object.fromEntries(
      reports.flatMap((r, i) =>
        r.status === 'fulfilled'
          ? [[hosts[i]!.name, { cpus: r.value.capabilities.cpus, memoryMiB: r.value.capabilities.memoryMiB }]]
          : [],
      ),
    );
  }

  /** Compute hosts of a cluster spec without a live lease (none without a coordination service). */
  private async failedHosts(spec: Spec): Promise<Set<string>> {
    const live = spec.cluster ? await this.d.liveHosts?.() : undefined;
    if (!live) return new Set();
    return new Set(spec.hosts.filter((h) => h.role !== 'storage' && !live.has(h.name)).map((h) => h.name));
  }

  /**
   * Plans `spec` against the hosts; in a cluster: failed hosts skipped, user-stopped VMs (and `keepStopped`) kept
   * stopped, stale copies of VMs owned elsewhere removed, placement shown before the steps.
   */
  private async planCluster(
    spec: Spec,
    h: { previous?: Spec | undefined; attempted?: Spec | undefined },
    placing?: ClusterPlacement,
    opts: ReconcileOptions = {},
  ): Promise<PlanResult & { spec: Spec; failedHosts: Set<string> }> {
    const ownership = spec.cluster ? this.d.ownership : undefined;
    const failedHosts = await this.failedHosts(spec);
    let desired = spec;
    const preface = [...(placing?.lines ?? [])];
    let owners: OwnedVm[] = [];
    if (ownership) {
      owners = await ownership.list();
      const stops = await this.d.store.list<UserStopRecord>(userStopKey(''));
      const keep = new Set(opts.keepStopped ?? []);
      for (const { value } of stops) {
        keep.add(value.vm);
        if (spec.vms.some((v) => v.name === value.vm && v.state === 'running'))
          preface.push(
            `@ vm ${value.vm} stays stopped (stopped by ${value.by} at ${value.at}; \`vmlink vm start ${value.vm}\` starts it)`,
          );
      }
      desired = {
        ...spec,
        vms: spec.vms.map((v) =>
          keep.has(v.name) && v.state === 'running' ? { ...v, state: 'stopped' } : v,
        ),
      };
    }
    // A copy is stale when the VM's record (before this apply) names another host.
    const ownerOf = new Map(owners.map((o) => [o.vm, o.host]));
    const result = await planAgainstHosts(this.d.store, this.d.agents, desired, resolveSpec(desired), {
      checkCaps: true,
      previous: h.previous,
      before: knownState([h.previous, h.attempted]),
      protectedVms: protectedVms([h.previous, h.attempted, spec]),
      failedHosts,
      ...(opts.hosts ? { onlyHosts: new Set(opts.hosts) } : {}),
      ...(ownership ? { staleCopy: (vm: string, host: string) => (ownerOf.get(vm) ?? host) !== host } : {}),
      preface,
    });
    return { ...result, spec: desired, failedHosts };
  }

  /**
   * Writes the owner records apply placed, each by compare-and-set, OWNER_WRITE_CONCURRENCY at once (one after
   * another, 20,000 VMs took minutes); a lost race stops the apply (no new write starts).
   */
  private async writeOwners(placing: ClusterPlacement): Promise<void> {
    const ownership = this.d.ownership!;
    await mapLimited(placing.writes, OWNER_WRITE_CONCURRENCY, async (w) => {
      const r = await ownership.assign(w.vm, w.host, w.reason, w.expected, w.specHost, w.from);
      if (!r)
        throw new ConflictError(
          `the owner record of vm ${w.vm} changed while this apply ran (HA or another controller moved it); nothing was started: apply again`,
          `vm/${w.vm}`,
        );
      await this.d.store.appendEvent(
        'ha.place',
        `vm ${w.vm} on ${w.host} (${w.reason}${w.from ? `, from ${w.from}` : ''}), token ${r.token}`,
      );
      // A VM the spec moves: its volumes follow it before it starts on the new host.
      if (w.from && this.d.fenceVolumes) await this.d.fenceVolumes(placing.spec, w.vm, r);
    });
  }

  /** Releases the owner records of VMs the spec dropped, once their deletion ran (not those on failed hosts). */
  private async releaseDropped(placing: ClusterPlacement, failed: ReadonlySet<string>): Promise<void> {
    for (const o of placing.dropped) {
      if (failed.has(o.host)) continue;
      if (await this.d.ownership!.release(o.vm, o.token))
        await this.d.store.appendEvent(
          'ha.release',
          `vm ${o.vm} left the spec: its owner record (${o.host}) is released`,
        );
    }
  }

  private execution(spec: Spec, task: TaskContext, previous?: Spec): ExecuteContext {
    return {
      store: this.d.store,
      agents: this.d.agents,
      spec,
      previous,
      task,
      ...(this.d.confirmTiming ? { confirmTiming: this.d.confirmTiming } : {}),
    };
  }
}

function sameHosts(a: Spec, b: Spec): boolean {
  return a.hosts.map((h) => h.name).join() === b.hosts.map((h) => h.name).join();
}
