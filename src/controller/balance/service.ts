// The balancer as the controller runs it: gathers loads (the placed spec, the metrics collector, HA's view of failed
// and maintenance hosts), plans, and applies plans through live migration, by hand (`vmlink balance --apply`) or
// automatically (`cluster.balance: automatic`, on the active controller only, see auto.ts).
import { InvalidStateError, UnsupportedError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import type { MetricsSnapshot } from '../../shared/metrics.js';
import type { Spec } from '../../spec/schema.js';
import type { BalanceApplyAnswer, BalancePlanView } from '../wire-balance.js';
import type { HaView } from '../wire-ha.js';
import { AUTO_INTERVAL_MS, type AutoMemory, autoBalanceRound, emptyAutoMemory } from './auto.js';
import { gatherBalanceInput, stalePlacement } from './gather.js';
import { type BalanceInput, type BalancePlan, planBalance } from './plan.js';

/** One live migration as the balancer needs it (migrate's `runMigration`, bound to the controller). */
export type MigrateFn = (req: {
  vm: string;
  to: string;
}) => Promise<{ ok: boolean; totalMs?: number; downtimeMs?: number }>;

/** What the balancer reads and calls. */
export interface BalanceDeps {
  spec: () => Promise<Spec | undefined>;
  /**
   * The newest metrics snapshot, collecting now when it lacks CPU figures (a rate needs two samples); with `fresh`,
   * one made now whatever the newest is.
   */
  snapshot: (fresh?: boolean) => Promise<MetricsSnapshot>;
  /** HA's view: failed hosts and hosts in maintenance are left out. */
  ha: () => Promise<HaView>;
  /** Live migration; absent on a controller without it: `--apply` refuses, automatic rounds only plan. */
  migrate?: MigrateFn | undefined;
  events: (kind: string, message: string) => Promise<unknown>;
}

/** Plans and applies balancing; see the module comment. */
export class BalanceControl {
  private memory: AutoMemory = emptyAutoMemory();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** One apply or automatic round at a time. */
  private busy: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly deps: BalanceDeps,
    private readonly intervalMs = AUTO_INTERVAL_MS,
  ) {}

  private async inputs(): Promise<{ spec: Spec; input: BalanceInput; notes: string[] }> {
    const spec = await this.deps.spec();
    if (!spec) throw new InvalidStateError('nothing to balance: no spec has been applied yet');
    const ha = await this.deps.ha();
    const unavailable = new Map<string, string>();
    for (const h of ha.hosts) {
      if (h.live === false) unavailable.set(h.name, 'failed (no lease)');
      else if (h.maintenance) unavailable.set(h.name, 'in maintenance');
    }
    let snapshot = await this.deps.snapshot();
    // Figures from before the last move (the collector samples every 15 s) would have the next plan move what the last
    // one moved already: take fresh ones.
    if (stalePlacement(spec, snapshot)) snapshot = await this.deps.snapshot(true);
    const { input, notes } = gatherBalanceInput(spec, snapshot, unavailable);
    const still = stalePlacement(spec, snapshot);
    if (still) notes.push(`${still}: the plan may count its load on both hosts`);
    return { spec, input, notes };
  }

  private view(spec: Spec, plan: BalancePlan, notes: string[], planMs: number): BalancePlanView {
    return {
      mode: spec.cluster?.balance ?? 'manual',
      ...plan,
      notes: [...notes, ...plan.notes],
      planMs: Math.round(planMs * 1000) / 1000,
    };
  }

  /** The plan now (`GET /v1/balance`). */
  async plan(): Promise<BalancePlanView> {
    const { spec, input, notes } = await this.inputs();
    const t0 = performance.now();
    const plan = planBalance(input);
    return this.view(spec, plan, notes, performance.now() - t0);
  }

  /** Plans and runs the moves in order, stopping at the first failure (`POST /v1/balance/apply`). */
  apply(by: string): Promise<BalanceApplyAnswer> {
    const migrate = this.deps.migrate;
    if (!migrate)
      return Promise.reject(
        new UnsupportedError(
          'balance --apply needs live migration (vmlink vm migrate), which this controller runs without; `vmlink balance --plan` shows the moves',
        ),
      );
    const run = this.busy.then(async () => {
      const plan = await this.plan();
      await this.deps.events('balance.apply', `${by}: ${plan.moves.length} move(s) planned`);
      return { plan, results: await this.runMoves(migrate, plan.moves) };
    });
    this.busy = run.catch(() => {});
    return run;
  }

  private async runMoves(
    migrate: MigrateFn,
    moves: BalancePlanView['moves'],
  ): Promise<BalanceApplyAnswer['results']> {
    const results: BalanceApplyAnswer['results'] = [];
    for (const m of moves) {
      try {
        const r = await migrate({ vm: m.vm, to: m.to });
        results.push({
          vm: m.vm,
          from: m.from,
          to: m.to,
          ok: r.ok,
          ...(r.totalMs !== undefined ? { totalMs: r.totalMs } : {}),
          ...(r.downtimeMs !== undefined ? { downtimeMs: r.downtimeMs } : {}),
        });
        await this.deps.events('balance.moved', `vm ${m.vm} ${m.from} -> ${m.to}: ${m.reason}`);
        if (!r.ok) break;
      } catch (e) {
        const error = (e as Error).message;
        results.push({ vm: m.vm, from: m.from, to: m.to, ok: false, error });
        await this.deps.events('balance.failed', `vm ${m.vm} ${m.from} -> ${m.to}: ${error}`);
        break;
      }
    }
    return results;
  }

  /** One automatic round (the loop calls it; tests too). Does nothing unless the spec says `automatic`. */
  async autoRound(now = Date.now()): Promise<string | undefined> {
    const spec = await this.deps.spec();
    if (spec?.cluster?.balance !== 'automatic') {
      this.memory = emptyAutoMemory();
      return undefined;
    }
    const { input } = await this.inputs();
    const r = autoBalanceRound(this.memory, input, now);
    this.memory = r.memory;
    if (!r.moves.length) return r.reason;
    if (!this.deps.migrate) {
      await this.deps.events(
        'balance.skipped',
        `${r.reason}; live migration is not available on this controller`,
      );
      return r.reason;
    }
    await this.deps.events('balance.auto', r.reason);
    await this.runMoves(this.deps.migrate, r.moves);
    return r.reason;
  }

  /** Starts automatic rounds (active controller only). */
  start(): void {
    if (this.running) return;
    this.running = true;
    const loop = () => {
      const round = this.busy.then(() => this.autoRound());
      this.busy = round.catch((e: unknown) =>
        log.warn({ err: (e as Error).message }, 'automatic balancing round failed'),
      );
      void this.busy.then(() => {
        if (this.running) this.timer = setTimeout(loop, this.intervalMs);
      });
    };
    this.timer = setTimeout(loop, this.intervalMs);
  }

  /** Stops automatic rounds; forgets cooldowns (a later active starts afresh, as a new controller would). */
  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.memory = emptyAutoMemory();
  }
}

/** How long apart the two samples are that a plan takes when the collector has no CPU rate yet. */
export const BALANCE_SAMPLE_GAP_MS = 1000;

/**
 * The collector's newest snapshot if it holds CPU rates, else one made now from two samples BALANCE_SAMPLE_GAP_MS
 * apart (a controller that just became active, or a collector not running: `vmlink balance --plan` still answers).
 * `fresh`: always the latter, so CPU rates span only the last BALANCE_SAMPLE_GAP_MS, not a move in between.
 */
export async function snapshotWithRates(
  collector: {
    latest(): MetricsSnapshot;
    collectNow(): Promise<MetricsSnapshot>;
  },
  fresh = false,
): Promise<MetricsSnapshot> {
  const has = (s: MetricsSnapshot) => s.series.some((x) => x.name === 'vmlink_host_cpu_utilization');
  const latest = collector.latest();
  if (!fresh && has(latest)) return latest;
  const first = await collector.collectNow();
  if (!fresh && has(first)) return first;
  await new Promise((r) => setTimeout(r, BALANCE_SAMPLE_GAP_MS));
  return collector.collectNow();
}
