// The series the controller knows without any agent: apply and verify durations and outcomes, the last verify's
// cells, alert instances by state. They live in one prom-client registry for the controller's life (histograms
// accumulate); the page renders it beside the collected series.
import { Gauge, Histogram, Registry } from 'prom-client';
import { METRICS, type MetricName } from '../../shared/metrics.js';

/** How an apply ended. */
export type ApplyOutcome = 'succeeded' | 'failed' | 'rolled-back' | 'cancelled';
/** How a verify ended: every cell as expected, some not, or it did not finish. */
export type VerifyOutcome = 'ok' | 'mismatch' | 'failed' | 'cancelled';
/** One row of `vmlink_alerts`: how many instances of a rule are in a state. */
export interface AlertCount {
  rule: string;
  state: string;
  severity: string;
  count: number;
}

// Applies run from a second to many minutes (VM creations, commit-confirm windows); verify similar.
const DURATION_BUCKETS = [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

const spec = (name: MetricName) => ({
  name,
  help: METRICS[name].help,
  labelNames: [...METRICS[name].labels] as string[],
  registers: [] as Registry[],
});

/** Holds and renders the controller's own series. */
export class ControllerSeries {
  readonly registry = new Registry();
  private readonly apply = new Histogram({
    ...spec('vmlink_apply_duration_seconds'),
    buckets: DURATION_BUCKETS,
  });
  private readonly verify = new Histogram({
    ...spec('vmlink_verify_duration_seconds'),
    buckets: DURATION_BUCKETS,
  });
  private readonly cells = new Gauge(spec('vmlink_verify_cells'));
  private readonly alerts = new Gauge(spec('vmlink_alerts'));

  constructor() {
    for (const m of [this.apply, this.verify, this.cells, this.alerts]) this.registry.registerMetric(m);
  }

  /** An apply ended after `seconds`. */
  observeApply(outcome: ApplyOutcome, seconds: number): void {
    this.apply.observe({ outcome }, seconds);
  }

  /** A verify ended after `seconds`; with its cells' results when it finished. */
  observeVerify(outcome: VerifyOutcome, seconds: number, cells?: Readonly<Record<string, number>>): void {
    this.verify.observe({ outcome }, seconds);
    if (!cells) return;
    this.cells.reset();
    for (const [result, n] of Object.entries(cells)) this.cells.set({ result }, n);
  }

  /** Replaces every row of `vmlink_alerts` (the alert engine calls it after each evaluation). */
  setAlerts(rows: readonly AlertCount[]): void {
    this.alerts.reset();
    for (const r of rows) this.alerts.set({ rule: r.rule, state: r.state, severity: r.severity }, r.count);
  }

  /** The exposition text of these series. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
