// The controller's collector: every METRICS_COLLECT_INTERVAL_MS it asks each spec host's agent for its sample (in
// parallel, each with a timeout), turns the samples into the catalog's series, keeps the newest snapshot and a bounded
// history, and tells its listeners (the alert engine). A scrape renders the cached snapshot: it never waits for an
// agent. Runs on the active controller only (main.ts registers it as an active-only service).
import { performance } from 'node:perf_hooks';
import { BadResponseError, UnsupportedError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import {
  type AgentMetrics,
  METRICS_COLLECT_INTERVAL_MS,
  METRICS_HISTORY_MS,
  type MetricsSnapshot,
  type MetricsSource,
  type Series,
} from '../../shared/metrics.js';
import type { Spec } from '../../spec/schema.js';
import type { HostHealth } from '../monitor.js';
import { type AlertCount, ControllerSeries } from './controller-series.js';
import { clockOffsetSeconds, cpuShares, sampleSeries } from './derive.js';
import { SeriesHistory } from './history.js';
import { renderSeries } from './render.js';

/** The longest one agent's sample may take (at most one period). */
export const METRICS_COLLECT_TIMEOUT_MS = 10_000;
/** Most series the history keeps (a 50-VM site has about 2,000). */
export const METRICS_HISTORY_SERIES_MAX = 100_000;

/** What the collector asks of an agent (`AgentClient.metrics`); absent on an agent client that cannot. */
export interface MetricsAgent {
  metrics(timeoutMs?: number): Promise<AgentMetrics>;
}

/** What the collector is wired to. */
export interface CollectorDeps {
  /** The applied spec (its hosts are the ones asked). */
  spec: () => Promise<Spec | undefined>;
  /** The client of a host's agent. */
  agents: (spec: Spec, host: string) => Partial<MetricsAgent>;
  /** The heartbeat monitor's records (`hostHealth(store)`), for the heartbeat age. */
  heartbeats?: () => Promise<Record<string, HostHealth>>;
  /**
   * Series the controller holds itself and alert rules must see (the backup objectives' gauges), at the snapshot's
   * time; catalog metrics only.
   */
  controllerSeries?: (now: number) => readonly Series[];
}

/** Timing of the collector (tests inject a clock and a short period). */
export interface CollectorOptions {
  /**
   * The clock of snapshots and history (epoch ms): alert rules' `for` and the doctor's trends run on it. The clock
   * offset and the heartbeat age are measured against the real clock (`wall`), which they are about.
   */
  now?: () => number;
  /** The real clock (tests only). */
  wall?: () => number;
  intervalMs?: number;
  timeoutMs?: number;
  historyMs?: number;
}

/** A listener of collections; awaited in turn, its failure logged. */
export type CollectedListener = (s: MetricsSnapshot) => void | Promise<void>;

interface HostState {
  /** The last sample the host answered with. */
  last?: AgentMetrics;
  /** Why the last collection failed (logged when it starts failing, not at every round). */
  error?: string;
}

/** Collects every host's sample; see the module comment. */
export class MetricsCollector implements MetricsSource {
  /** The controller's own series (apply, verify, alerts), rendered on the same page. */
  readonly series = new ControllerSeries();
  private readonly now: () => number;
  private readonly wall: () => number;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly kept: SeriesHistory;
  private readonly hosts = new Map<string, HostState>();
  private readonly listeners = new Set<CollectedListener>();
  private snapshot: MetricsSnapshot | undefined;
  /** The collected part of the page, rendered once per snapshot. */
  private page: { of: MetricsSnapshot; text: Promise<string> } | undefined;
  /** Collections run one at a time, in order of request. */
  private chain: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** Bumped by `stop`: a collection started before then tells no listener. */
  private epoch = 0;

  constructor(
    private readonly deps: CollectorDeps,
    opts: CollectorOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.wall = opts.wall ?? Date.now;
    this.intervalMs = opts.intervalMs ?? METRICS_COLLECT_INTERVAL_MS;
    this.timeoutMs = opts.timeoutMs ?? Math.min(this.intervalMs, METRICS_COLLECT_TIMEOUT_MS);
    const retentionMs = opts.historyMs ?? METRICS_HISTORY_MS;
    this.kept = new SeriesHistory({
      retentionMs,
      // A point per period over the window, with room for `collectNow` between periods.
      pointsMax: Math.min(10_000, 2 * Math.ceil(retentionMs / this.intervalMs) + 16),
      seriesMax: METRICS_HISTORY_SERIES_MAX,
    });
  }

  /** Starts collecting: at once, then every period after the previous collection ended. */
  start(): void {
    if (this.running) return;
    this.running = true;
    const loop = async () => {
      await this.collectNow().catch((e: unknown) =>
        log.warn({ err: (e as Error).message }, 'metrics collection failed'),
      );
      if (this.running) this.timer = setTimeout(() => void loop(), this.intervalMs);
    };
    void loop();
  }

  /**
   * Stops collecting. Resolves at once: a collection still waiting for agents (up to its timeout) ends without
   * telling any listener, so nothing acts on it after the controller stopped being active.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.epoch++;
    clearTimeout(this.timer);
  }

  /** Calls `listener` after every collection with its snapshot; returns what unsubscribes it. */
  onCollected(listener: CollectedListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Collects every host now (after any collection under way) and resolves once every listener ran. */
  collectNow(): Promise<MetricsSnapshot> {
    const run = this.chain.then(() => this.collect());
    this.chain = run.catch(() => undefined);
    return run;
  }

  latest(): MetricsSnapshot {
    return this.snapshot ?? { at: this.now(), series: [] };
  }

  history(
    name: string,
    labels: Readonly<Record<string, string>>,
    sinceMs: number,
  ): Array<{ at: number; value: number }> {
    return this.kept.get(name, labels, sinceMs);
  }

  /** Replaces every row of `vmlink_alerts` (the alert engine, after each evaluation); see `ControllerSeries`. */
  setAlertCounts(rows: readonly AlertCount[]): void {
    this.series.setAlerts(rows);
  }

  /** The page: the last snapshot's series and the controller's own (Prometheus text format 0.0.4). */
  async render(): Promise<string> {
    const [collected, own] = await Promise.all([this.pageOf(this.latest()), this.series.render()]);
    return collected + own;
  }

  /** The collected part of the page for `snap`, rendered once. */
  private pageOf(snap: MetricsSnapshot): Promise<string> {
    if (this.page?.of !== snap) this.page = { of: snap, text: renderSeries(snap.series) };
    return this.page.text;
  }

  private async collect(): Promise<MetricsSnapshot> {
    const started = performance.now();
    const epoch = this.epoch;
    const spec = await this.deps.spec();
    const names = spec?.hosts.map((h) => h.name) ?? [];
    for (const h of [...this.hosts.keys()]) if (!names.includes(h)) this.hosts.delete(h);
    const heartbeats = async (): Promise<Record<string, HostHealth>> =>
      (await this.deps.heartbeats?.().catch(() => undefined)) ?? {};
    const [results, health] = await Promise.all([
      Promise.all(names.map((h) => this.collectHost(spec!, h))),
      heartbeats(),
    ]);
    const series: Series[] = [];
    const wall = this.wall();
    names.forEach((host, i) => {
      const r = results[i]!;
      series.push({ name: 'vmlink_host_up', labels: { host }, value: r ? 1 : 0 });
      const seen = health[host]?.lastSeen;
      const seenAt = seen === undefined ? Number.NaN : Date.parse(seen);
      if (Number.isFinite(seenAt))
        series.push({
          name: 'vmlink_host_heartbeat_age_seconds',
          labels: { host },
          value: Math.max(0, (wall - seenAt) / 1000),
        });
      if (r) series.push(...r);
    });
    series.push({
      name: 'vmlink_collect_duration_seconds',
      labels: {},
      value: (performance.now() - started) / 1000,
    });
    const at = this.now();
    try {
      series.push(...(this.deps.controllerSeries?.(at) ?? []));
    } catch (e) {
      log.warn({ err: (e as Error).message }, "the controller's own series failed");
    }
    const snapshot: MetricsSnapshot = { at, series };
    this.snapshot = snapshot;
    // Rendered now, in the collector's time: the next scrape finds the page ready.
    this.pageOf(snapshot).catch(() => undefined);
    this.kept.add(snapshot.at, series);
    if (epoch !== this.epoch) return snapshot;
    for (const l of this.listeners) {
      try {
        await l(snapshot);
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'a metrics listener failed');
      }
    }
    return snapshot;
  }

  /** One host's series; undefined when its agent did not answer with a valid sample of itself. */
  private async collectHost(spec: Spec, host: string): Promise<Series[] | undefined> {
    const state = this.hosts.get(host) ?? {};
    this.hosts.set(host, state);
    try {
      const agent = this.deps.agents(spec, host);
      if (!agent.metrics)
        throw new UnsupportedError(`the agent client of ${host} cannot ask for metrics`, host);
      const sentAt = this.wall();
      const sample = await agent.metrics(this.timeoutMs);
      const answeredAt = this.wall();
      // The host label is the spec's name of the host asked: an agent answering for another is refused.
      if (sample.host !== host)
        throw new BadResponseError(
          `the agent of ${host} answered with a sample of host ${JSON.stringify(sample.host.slice(0, 64))}`,
          '/v1/metrics',
        );
      const out = [
        {
          name: 'vmlink_host_clock_offset_seconds',
          labels: { host },
          value: clockOffsetSeconds(sample.at, sentAt, answeredAt),
        },
        ...sampleSeries(host, sample),
        ...cpuShares(host, state.last, sample),
      ];
      state.last = sample;
      if (state.error !== undefined) log.info({ host }, 'metrics: the agent answers again');
      delete state.error;
      return out;
    } catch (e) {
      const error = (e as Error).message;
      if (state.error === undefined) log.warn({ host, err: error }, 'metrics: the agent did not answer');
      state.error = error;
      return undefined;
    }
  }
}
