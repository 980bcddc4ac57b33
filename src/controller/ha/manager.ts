// The HA manager: on the active controller only, it watches host leases (and ticks every 500 ms), asks the decision
// engine what to do, records every decision as an event `ha.<kind>`, and carries out the actions: a new owner record
// by compare-and-set on the token it read, storage fencing, then a reconcile of the target host that creates and
// starts the VM there under the new token (serialized with user applies by the Deployer).
import {
  type FencingToken,
  type HaDecision,
  type MaintenanceRecord,
  maintenanceKey,
  type OwnedVm,
  type UserStopRecord,
  userStopKey,
} from '../../shared/cluster.js';
import { log } from '../../shared/log.js';
import type { Spec } from '../../spec/schema.js';
import type { ReconcileOptions } from '../apply.js';
import type { ActiveService, Coordination, LiveHost } from '../cluster/types.js';
import type { AgentFactory } from '../hosts.js';
import { migrationInFlight } from '../migrate/in-flight.js';
import type { OwnershipStore } from '../ownership.js';
import type { SpecStore } from '../spec-store.js';
import type { Store } from '../store/types.js';
import type { TaskContext } from '../tasks.js';
import type { DecideFn, HaAction, HaHostInput, HaInputs, HaMemory, HaVmInput } from './types.js';

/** How often the manager looks again without a lease change. */
export const HA_TICK_MS = 500;
/** A reconcile that failed is tried again this long after. */
export const HA_RETRY_MS = 5_000;
/** How long the manager waits for a host's report (its capacity) within a round. */
const CAPACITY_REPORT_TIMEOUT_MS = 2_000;

/** What the manager works with. */
export interface HaManagerDeps {
  store: Store;
  specs: SpecStore;
  ownership: OwnershipStore;
  coordination: Coordination;
  agents: AgentFactory;
  /** Applies the current (placed) spec to `hosts`, failed hosts skipped (`Deployer.reconcile`). */
  reconcile: (ctx: TaskContext, opts: ReconcileOptions) => Promise<unknown>;
  decide: DecideFn;
  /** Fences a VM's volumes to its new owner before it starts there (storage-fence), when available. */
  fenceVolumes?: (spec: Spec, vm: string, owner: OwnedVm) => Promise<unknown>;
  now?: () => number;
  tickMs?: number;
}

/** A host to reconcile: the VMs moved there (for `ha.started`), and when to try (again). */
interface PendingHost {
  vms: Map<
    string,
    { token: FencingToken; from?: string | undefined; detectedAt?: number; assignedAt: number }
  >;
  nextTry: number;
}

/** The HA manager (an `ActiveService`: started when this controller becomes active, stopped when it is not). */
export class HaManager implements ActiveService {
  readonly name = 'ha-manager';
  private memory: HaMemory = { hosts: {} };
  private live: LiveHost[] | undefined;
  private readonly downSince = new Map<string, number>();
  private readonly capacity = new Map<string, { cpus: number; memoryMiB: number }>();
  private readonly pending = new Map<string, PendingHost>();
  private unwatch: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private abort = new AbortController();
  private readonly now: () => number;

  constructor(private readonly d: HaManagerDeps) {
    this.now = d.now ?? Date.now;
  }

  start(): void {
    this.memory = { hosts: {} };
    this.live = undefined;
    this.pending.clear();
    this.downSince.clear();
    this.abort = new AbortController();
    this.unwatch = this.d.coordination.watchHosts((hosts) => {
      this.live = hosts;
      this.kick();
    });
    this.timer = setInterval(() => this.kick(), this.d.tickMs ?? HA_TICK_MS);
    this.kick();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.unwatch?.();
    this.unwatch = undefined;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Runs a round now, or once more after the one running. */
  kick(): void {
    if (this.abort.signal.aborted) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          await this.round();
        } catch (e) {
          if (!this.abort.signal.aborted) log.warn({ err: e }, `HA round failed: ${(e as Error).message}`);
        }
      } while (this.again && !this.abort.signal.aborted);
    })().finally(() => {
      this.running = undefined;
    });
  }

  /** Resolves when the round running now (if any) has ended (tests). */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  /** One round: gather inputs, decide, record decisions, act. */
  private async round(): Promise<void> {
    const cur = await this.d.specs.current();
    if (!cur?.spec.cluster) return;
    const spec = cur.spec;
    const live = this.live ?? (await this.d.coordination.liveHosts());
    this.live ??= live;
    const inputs = await this.inputs(spec, live);
    const r = this.d.decide(this.memory, inputs);
    this.memory = r.memory;
    for (const dec of r.decisions) {
      await this.d.store.appendEvent(`ha.${dec.kind}`, describeDecision(dec));
      // A host back from a failure: reconciling it starts what it still owns and removes its stale copies.
      if (dec.kind === 'host-recovered' && dec.host) this.pendingHost(dec.host);
    }
    for (const a of r.actions) {
      if (this.abort.signal.aborted) return;
      await this.act(spec, a, live).catch(async (e: unknown) => {
        await this.d.store.appendEvent('ha.action-failed', `${describeAction(a)}: ${(e as Error).message}`);
      });
    }
    await this.reconcilePending(spec);
  }

  private async inputs(spec: Spec, live: LiveHost[]): Promise<HaInputs> {
    const now = this.now();
    const liveBy = new Map(live.map((h) => [h.host, h]));
    const maintenance = new Set(
      (await this.d.store.list<MaintenanceRecord>(maintenanceKey(''))).map((r) => r.value.host),
    );
    const stopped = new Set(
      (await this.d.store.list<UserStopRecord>(userStopKey(''))).map((r) => r.value.vm),
    );
    const owners = new Map((await this.d.ownership.list()).map((o) => [o.vm, o]));
    const compute = spec.hosts.filter((h) => h.role !== 'storage');
    const hosts: HaHostInput[] = [];
    for (const h of compute) {
      const l = liveBy.get(h.name);
      if (l) this.downSince.delete(h.name);
      else if (!this.downSince.has(h.name)) this.downSince.set(h.name, now);
      hosts.push({
        name: h.name,
        live: l !== undefined,
        ...(l ? { leaseAgeMs: Math.max(0, now - l.seenAt) } : {}),
        maintenance: maintenance.has(h.name),
        capacity: h.capacity ?? (await this.capacityOf(spec, h.name, l !== undefined)),
      });
    }
    const vms: HaVmInput[] = spec.vms.map((v) => {
      const o = owners.get(v.name);
      return {
        name: v.name,
        policy: v.ha,
        cpus: v.cpus,
        memoryMiB: v.memoryMiB,
        ...(o ? { owner: { host: o.host, token: o.token } } : {}),
        userStopped: stopped.has(v.name),
      };
    });
    return { now, hosts, vms, admissionHostFailures: spec.cluster?.admission.hostFailures ?? 0 };
  }

  /** A host's capacity as its agent last reported it (asked once while it is live; none known: no room). */
  private async capacityOf(
    spec: Spec,
    host: string,
    live: boolean,
  ): Promise<{ cpus: number; memoryMiB: number }> {
    const known = this.capacity.get(host);
    if (known || !live) return known ?? { cpus: 0, memoryMiB: 0 };
    try {
      const r = await this.d.agents(spec, host).report(CAPACITY_REPORT_TIMEOUT_MS);
      const cap = { cpus: r.capabilities.cpus, memoryMiB: r.capabilities.memoryMiB };
      this.capacity.set(host, cap);
      return cap;
    } catch {
      return { cpus: 0, memoryMiB: 0 };
    }
  }

  /** Carries out one action: a move stops the VM on its live host first; then the CAS; then fencing. */
  private async act(spec: Spec, a: HaAction, live: LiveHost[]): Promise<void> {
    // Its owner record may name a target that does not run it yet (migrate/in-flight.ts): decided again next round.
    if (migrationInFlight(a.vm)) {
      await this.d.store.appendEvent(
        'ha.wait-migration',
        `${describeAction(a)}: it is migrating; decided again next round`,
      );
      return;
    }
    if (a.kind === 'stop') {
      await this.d.agents(spec, a.host).act({ kind: 'vm.stop', name: a.vm, force: false });
      await this.d.store.appendEvent('ha.stopped', `vm ${a.vm} on ${a.host}`);
      return;
    }
    const fromLive = a.from !== undefined && live.some((h) => h.host === a.from);
    if (fromLive && a.from) await this.stopOn(spec, a.vm, a.from);
    const cur = await this.d.ownership.get(a.vm);
    const owner = await this.d.ownership.assign(
      a.vm,
      a.to,
      fromLive ? 'maintenance' : 'ha-restart',
      a.expected,
      cur?.specHost,
      a.from ?? cur?.host,
    );
    if (!owner) {
      await this.d.store.appendEvent(
        'ha.lost-race',
        `vm ${a.vm}: its owner record changed since token ${a.expected ?? 'none'} was read; decided again next round`,
      );
      return;
    }
    const assignedAt = this.now();
    await this.d.store.appendEvent(
      'ha.assigned',
      `vm ${a.vm}: ${a.from ?? 'none'} -> ${a.to}, token ${owner.token} (${owner.reason})`,
    );
    if (this.d.fenceVolumes) await this.d.fenceVolumes(spec, a.vm, owner);
    const p = this.pendingHost(a.to);
    const detectedAt = a.from !== undefined ? this.downSince.get(a.from) : undefined;
    if (a.start)
      p.vms.set(a.vm, {
        token: owner.token,
        from: a.from,
        assignedAt,
        ...(detectedAt !== undefined ? { detectedAt } : {}),
      });
  }

  /** Stops `vm` on `host` (a maintenance move); a VM not defined there is already gone. */
  private async stopOn(spec: Spec, vm: string, host: string): Promise<void> {
    try {
      await this.d.agents(spec, host).act({ kind: 'vm.stop', name: vm, force: false });
    } catch (e) {
      if ((e as { kind?: string }).kind !== 'not-found') throw e;
    }
    await this.d.store.appendEvent('ha.stopped', `vm ${vm} on ${host} (moving it)`);
  }

  private pendingHost(host: string): PendingHost {
    let p = this.pending.get(host);
    if (!p) {
      p = { vms: new Map(), nextTry: 0 };
      this.pending.set(host, p);
    }
    p.nextTry = Math.min(p.nextTry, this.now());
    return p;
  }

  /** Reconciles the hosts VMs moved to (and hosts that came back), failed ones again after HA_RETRY_MS. */
  private async reconcilePending(spec: Spec): Promise<void> {
    const now = this.now();
    const due = [...this.pending.entries()].filter(([, p]) => p.nextTry <= now);
    if (!due.length || this.abort.signal.aborted) return;
    const hosts = due.map(([h]) => h);
    const keepStopped = new Set(spec.vms.filter((v) => v.ha?.state === 'stopped').map((v) => v.name));
    const ctx: TaskContext = {
      progress: (m) => log.info({ ha: true }, m),
      signal: this.abort.signal,
    };
    try {
      await this.d.reconcile(ctx, { hosts, keepStopped });
    } catch (e) {
      for (const [, p] of due) p.nextTry = now + HA_RETRY_MS;
      await this.d.store.appendEvent(
        'ha.reconcile-failed',
        `${hosts.join(', ')}: ${(e as Error).message.split('\n')[0]}; trying again in ${HA_RETRY_MS / 1000} s`,
      );
      return;
    }
    const startedAt = this.now();
    for (const [host, p] of due) {
      this.pending.delete(host);
      for (const [vm, t] of p.vms)
        await this.d.store.appendEvent(
          'ha.started',
          `vm ${vm} on ${host}${t.from ? ` (from ${t.from})` : ''}, token ${t.token}: ${formatTimes({
            ...(t.detectedAt !== undefined ? { detected: t.detectedAt } : {}),
            assigned: t.assignedAt,
            started: startedAt,
          })}`,
        );
    }
  }
}

/** One decision as an event message: `vm web: host2 -> host1: host2 failed`. */
export function describeDecision(d: HaDecision): string {
  const what = d.vm ? `vm ${d.vm}` : d.host ? `host ${d.host}` : 'cluster';
  const move = d.from || d.to ? `: ${d.from ?? '?'} -> ${d.to ?? '?'}` : '';
  return `${what}${move}: ${d.reason}`;
}

function describeAction(a: HaAction): string {
  return a.kind === 'stop' ? `stop vm ${a.vm} on ${a.host}` : `assign vm ${a.vm} to ${a.to}`;
}

/** Times an `ha.started` event carries (ms since the epoch). */
export interface HaTimes {
  detected?: number;
  assigned?: number;
  started?: number;
}

function formatTimes(t: HaTimes): string {
  return (['detected', 'assigned', 'started'] as const)
    .filter((k) => t[k] !== undefined)
    .map((k) => `${k}=${new Date(t[k]!).toISOString()}`)
    .join(' ');
}

/** The times in an `ha.started` event's message (`detected=<ISO> assigned=<ISO> started=<ISO>`), for drills. */
export function parseHaTimes(message: string): HaTimes {
  const out: HaTimes = {};
  for (const m of message.matchAll(/\b(detected|assigned|started)=(\S+)/g)) {
    const t = Date.parse(m[2]!);
    if (!Number.isNaN(t)) out[m[1] as keyof HaTimes] = t;
  }
  return out;
}
