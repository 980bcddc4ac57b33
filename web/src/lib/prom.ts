// Prometheus text exposition (what GET /v1/metrics answers), parsed into samples, and a bounded history of the
// series the charts draw. Pure: unit-tested in prom.test.ts.

/** One sample: a metric name, its labels and value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** At most this many samples are read from one page (a site's page is far smaller; a bigger one is cut). */
export const SAMPLES_MAX = 20_000;

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/y;

/** Parses label pairs `a="x",b="y"`; undefined when malformed. */
function parseLabels(text: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const start = LABEL.lastIndex;
    const m = LABEL.exec(text);
    if (!m || LABEL.lastIndex === start) return undefined;
    out[m[1]!] = m[2]!.replace(/\\(.)/g, (_s, ch: string) => (ch === 'n' ? '\n' : ch));
  }
  return out;
}

/** The samples of an exposition page (comments and malformed lines skipped; at most SAMPLES_MAX). */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    if (out.length >= SAMPLES_MAX) break;
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = m[3] ? parseLabels(m[3]) : {};
    const value = Number(m[4]);
    if (!labels || Number.isNaN(value)) continue;
    out.push({ name: m[1]!, labels, value });
  }
  return out;
}

/** A chart's series: one per label set of a metric, e.g. one line per host. */
export interface ChartDef {
  /** The metric drawn. */
  metric: string;
  title: string;
  /** The label naming each line (host, vm, pool). */
  by: string;
  unit: 'ratio' | 'bytes' | 'seconds';
}

/** The charts of the metrics view: gauges, so a poll's value is the point (no rate needed). */
export const CHARTS: readonly ChartDef[] = [
  { metric: 'vmlink_host_cpu_utilization', title: 'Host CPU', by: 'host', unit: 'ratio' },
  { metric: 'vmlink_host_memory_utilization', title: 'Host memory', by: 'host', unit: 'ratio' },
  { metric: 'vmlink_vm_cpu_utilization', title: 'VM CPU', by: 'vm', unit: 'ratio' },
  { metric: 'vmlink_vm_memory_rss_bytes', title: 'VM memory (RSS)', by: 'vm', unit: 'bytes' },
  { metric: 'vmlink_pool_utilization', title: 'Pool usage', by: 'pool', unit: 'ratio' },
  { metric: 'vmlink_host_heartbeat_age_seconds', title: 'Heartbeat age', by: 'host', unit: 'seconds' },
];

/** Points kept per line (a poll every 5 s: ten minutes). */
export const HISTORY_POINTS = 120;
/** Lines kept per chart (a site with more VMs shows the first ones by name). */
export const LINES_MAX = 12;

/** Timestamped values per chart and line, bounded in points and lines. */
export class MetricHistory {
  private readonly data = new Map<string, Map<string, Array<[number, number]>>>();

  /** Adds a page's samples taken at `t` (ms). */
  add(t: number, samples: readonly Sample[]): void {
    for (const def of CHARTS) {
      let lines = this.data.get(def.metric);
      if (!lines) {
        lines = new Map();
        this.data.set(def.metric, lines);
      }
      for (const s of samples) {
        if (s.name !== def.metric) continue;
        const key = s.labels[def.by] ?? '';
        let pts = lines.get(key);
        if (!pts) {
          if (lines.size >= LINES_MAX) continue;
          pts = [];
          lines.set(key, pts);
        }
        pts.push([t, s.value]);
        if (pts.length > HISTORY_POINTS) pts.splice(0, pts.length - HISTORY_POINTS);
      }
    }
  }

  /** The lines of a chart, sorted by name. */
  lines(metric: string): Array<{ name: string; points: Array<[number, number]> }> {
    const lines = this.data.get(metric);
    if (!lines) return [];
    return [...lines.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, points]) => ({ name, points }));
  }
}

/** A value in a chart's unit, for labels. */
export function formatValue(v: number, unit: ChartDef['unit']): string {
  if (unit === 'ratio') return `${(v * 100).toFixed(1)} %`;
  if (unit === 'seconds') return `${v.toFixed(1)} s`;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let x = v;
  let i = 0;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/**
 * The SVG path (`M x y L x y ...`) of a line in a `width` x `height` box: time on x over [t0, t1], value on y over
 * [0, max] (max at least the unit's natural top: 1 for ratios). Empty for no points.
 */
export function linePath(
  points: ReadonlyArray<readonly [number, number]>,
  box: { width: number; height: number; t0: number; t1: number; max: number },
): string {
  if (points.length === 0) return '';
  const span = Math.max(1, box.t1 - box.t0);
  const max = box.max > 0 ? box.max : 1;
  const xy = points.map(([t, v]) => {
    const x = ((t - box.t0) / span) * box.width;
    const y = box.height - (Math.min(Math.max(v, 0), max) / max) * box.height;
    return `${x.toFixed(1)} ${y.toFixed(1)}`;
  });
  return `M ${xy.join(' L ')}`;
}
