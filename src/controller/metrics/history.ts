// The bounded history of every series: what alert rules' trends and the doctor's memory fit read. Bounded in time
// (`retentionMs`), in points per series, and in series (a host reporting thousands of VMs cannot grow it without end).

import type { Series } from '../../shared/metrics.js';
import { seriesKey } from './derive.js';

/** Bounds of the history. */
export interface HistoryBounds {
  /** Points older than this (before the newest `at`) are dropped. */
  retentionMs: number;
  /** Most points kept per series (the oldest go first). */
  pointsMax: number;
  /** Most series kept; a new series beyond it is not recorded (the existing ones keep their history). */
  seriesMax: number;
}

interface Track {
  at: number[];
  value: number[];
}

/** Per series, its values over time, oldest first. */
export class SeriesHistory {
  private readonly tracks = new Map<string, Track>();

  constructor(private readonly bounds: HistoryBounds) {}

  /** Records one collection's series at `at`, then drops what fell out of the window (points and whole series). */
  add(at: number, series: readonly Series[]): void {
    for (const s of series) {
      const key = seriesKey(s.name, s.labels);
      let t = this.tracks.get(key);
      if (!t) {
        if (this.tracks.size >= this.bounds.seriesMax) continue;
        t = { at: [], value: [] };
        this.tracks.set(key, t);
      }
      t.at.push(at);
      t.value.push(s.value);
    }
    this.prune(at);
  }

  /** One series' points since `sinceMs` (inclusive), oldest first; labels must match exactly. */
  get(
    name: string,
    labels: Readonly<Record<string, string>>,
    sinceMs: number,
  ): Array<{ at: number; value: number }> {
    const t = this.tracks.get(seriesKey(name, labels));
    if (!t) return [];
    const out: Array<{ at: number; value: number }> = [];
    for (let i = 0; i < t.at.length; i++)
      if (t.at[i]! >= sinceMs) out.push({ at: t.at[i]!, value: t.value[i]! });
    return out;
  }

  /** How many series are kept. */
  get size(): number {
    return this.tracks.size;
  }

  private prune(now: number): void {
    const oldest = now - this.bounds.retentionMs;
    for (const [key, t] of this.tracks) {
      let drop = 0;
      while (drop < t.at.length && t.at[drop]! < oldest) drop++;
      drop = Math.max(drop, t.at.length - this.bounds.pointsMax);
      if (drop === t.at.length) {
        this.tracks.delete(key);
        continue;
      }
      if (drop > 0) {
        t.at.splice(0, drop);
        t.value.splice(0, drop);
      }
    }
  }
}
