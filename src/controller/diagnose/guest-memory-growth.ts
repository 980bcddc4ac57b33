// `guest-memory-growth`: a VM whose resident memory (its QEMU's RSS, vmlink_vm_memory_rss_bytes) grew steadily over
// the last window: the least-squares line through the collected samples rises by at least 64 MiB across them and
// fits them well (R² >= 0.9), so a one-off step (a boot, a cache filled once) does not count. Needs the controller's
// metric history; without it the doctor says the case was not checked (doctor.ts).
import { METRICS_COLLECT_INTERVAL_MS, type MetricsSource } from '../../shared/metrics.js';
import type { Diagnosis } from '../wire-observe.js';
import type { Diagnose } from './types.js';

/** How far back the trend is fitted. */
export const MEMORY_TREND_WINDOW_MS = 10 * 60_000;
/** The samples must span at least this much of the window (a VM that just started has no trend yet). */
export const MEMORY_TREND_MIN_SPAN_MS = MEMORY_TREND_WINDOW_MS / 2;
/** At least this many samples. */
export const MEMORY_TREND_MIN_SAMPLES = 5;
/** Fitted growth across the samples that counts as a leak. */
export const MEMORY_GROWTH_MIN_BYTES = 64 * 1024 * 1024;
/** How well the line must fit. */
export const MEMORY_TREND_MIN_R2 = 0.9;

const MiB = 1024 * 1024;

/** Least-squares line through points: slope (per ms), R², and the span of `at`. */
export function linearFit(points: ReadonlyArray<{ at: number; value: number }>): {
  slope: number;
  r2: number;
  spanMs: number;
} {
  const n = points.length;
  if (n < 2) return { slope: 0, r2: 0, spanMs: 0 };
  const t0 = points[0]!.at;
  let sx = 0;
  let sy = 0;
  for (const p of points) {
    sx += p.at - t0;
    sy += p.value;
  }
  const mx = sx / n;
  const my = sy / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (const p of points) {
    const dx = p.at - t0 - mx;
    const dy = p.value - my;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  const spanMs = points[n - 1]!.at - t0;
  if (sxx === 0) return { slope: 0, r2: 0, spanMs };
  const slope = sxy / sxx;
  // A flat series fits a flat line perfectly, yet shows no growth: R² 0 keeps it out.
  const r2 = syy === 0 ? 0 : (sxy * sxy) / (sxx * syy);
  return { slope, r2, spanMs };
}

/** One VM's trend, when it is a leak by the thresholds above. */
export function memoryTrend(
  metrics: MetricsSource,
  host: string,
  vm: string,
  now: number,
):
  | {
      slope: number;
      r2: number;
      spanMs: number;
      growth: number;
      samples: number;
      first: number;
      last: number;
    }
  | undefined {
  const points = metrics.history('vmlink_vm_memory_rss_bytes', { host, vm }, now - MEMORY_TREND_WINDOW_MS);
  if (points.length < MEMORY_TREND_MIN_SAMPLES) return undefined;
  const fit = linearFit(points);
  const growth = fit.slope * fit.spanMs;
  if (
    fit.spanMs < MEMORY_TREND_MIN_SPAN_MS ||
    fit.r2 < MEMORY_TREND_MIN_R2 ||
    growth < MEMORY_GROWTH_MIN_BYTES
  )
    return undefined;
  return { ...fit, growth, samples: points.length, first: points[0]!.value, last: points.at(-1)!.value };
}

export const guestMemoryGrowth: Diagnose = ({ spec, hosts, metrics, now }) => {
  if (!metrics) return [];
  const asked = new Set(hosts.map((h) => h.host));
  const configured = (host: string, vm: string) =>
    metrics
      .latest()
      .series.find(
        (s) => s.name === 'vmlink_vm_memory_configured_bytes' && s.labels.host === host && s.labels.vm === vm,
      )?.value;
  const out: Diagnosis[] = [];
  for (const vm of spec.vms) {
    if (!asked.has(vm.host)) continue;
    const t = memoryTrend(metrics, vm.host, vm.name, now);
    if (!t) continue;
    const perMin = (t.slope * 60_000) / MiB;
    const conf = configured(vm.host, vm.name) ?? vm.memoryMiB * MiB;
    out.push({
      id: 'guest-memory-growth',
      severity: t.last >= 0.9 * conf ? 'critical' : 'warning',
      host: vm.host,
      object: `vm ${vm.name}`,
      summary: `vm ${vm.name} on ${vm.host}: resident memory grew ${(t.growth / MiB).toFixed(0)} MiB in ${(t.spanMs / 60_000).toFixed(1)} min (${perMin.toFixed(1)} MiB/min, steadily)`,
      evidence: [
        `vmlink_vm_memory_rss_bytes{host="${vm.host}",vm="${vm.name}"}: ${t.samples} samples over ${(t.spanMs / 1000).toFixed(0)} s, ${(t.first / MiB).toFixed(0)} -> ${(t.last / MiB).toFixed(0)} MiB`,
        `least-squares slope ${perMin.toFixed(2)} MiB/min, R² ${t.r2.toFixed(3)} (thresholds: growth >= ${MEMORY_GROWTH_MIN_BYTES / MiB} MiB, R² >= ${MEMORY_TREND_MIN_R2})`,
        `configured memory ${(conf / MiB).toFixed(0)} MiB`,
      ],
      fix: `look for a leak in the guest (a process or a tmpfs that keeps growing: \`vmlink vm exec ${vm.name} -- ps\`, \`df /dev/shm /tmp\`); the VM is killed by the host's OOM killer or swaps once its memory is used up`,
    });
  }
  return out;
};

/** The collection interval, for the note that says how soon a trend can show. */
export const MEMORY_TREND_NEEDS = `${MEMORY_TREND_MIN_SAMPLES} samples over ${MEMORY_TREND_MIN_SPAN_MS / 60_000} min (collected every ${METRICS_COLLECT_INTERVAL_MS / 1000} s)`;
