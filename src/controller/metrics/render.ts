// The exposition text of a snapshot (Prometheus text format 0.0.4), made with prom-client in a fresh registry each
// time: a series that vanished from the snapshot (a VM removed, a host down) vanishes from the page instead of
// repeating its last value. Only names of the catalog are rendered, with the catalog's type, help and labels.
import { Counter, Gauge, Registry } from 'prom-client';
import { METRICS, type MetricName, type Series } from '../../shared/metrics.js';

const isCatalogName = (name: string): name is MetricName => Object.hasOwn(METRICS, name);

/** Renders the gauges and counters of `series` (histograms are the controller's own: `ControllerSeries`). */
export function renderSeries(series: readonly Series[]): Promise<string> {
  const registry = new Registry();
  const byName = new Map<MetricName, Series[]>();
  for (const s of series) {
    if (!isCatalogName(s.name)) continue;
    const list = byName.get(s.name);
    if (list) list.push(s);
    else byName.set(s.name, [s]);
  }
  for (const [name, list] of byName) {
    const info = METRICS[name];
    const labelNames = [...info.labels] as string[];
    const labelsOf = (s: Series) => Object.fromEntries(labelNames.map((l) => [l, s.labels[l] ?? '']));
    const base = { name, help: info.help, labelNames, registers: [registry] };
    if (info.type === 'counter') {
      const c = new Counter(base);
      // A fresh counter starts at 0: adding the collected total sets it.
      for (const s of list) c.inc(labelsOf(s), s.value);
    } else if (info.type === 'gauge') {
      const g = new Gauge(base);
      for (const s of list) g.set(labelsOf(s), s.value);
    }
  }
  return registry.metrics();
}
