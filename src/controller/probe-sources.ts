// Verify's probing loop: every source's probes as one batch (one command at the source), sources in parallel.
import type { ProbeSpec } from '../exec/probe.js';
import type { ProbeResult } from '../shared/results.js';
import type { VmEndpoint } from '../verify/expect.js';

/** One probe waiting to run, and what to do with its outcome (fill in its matrix cell). */
export interface PendingProbe {
  probe: ProbeSpec;
  finish: (r: ProbeResult) => Promise<void>;
}

/** A probe outcome for a probe that did not run (its source's batch failed): unmeasured, never reachable. */
export function notMeasured(e: unknown): ProbeResult {
  return {
    reachable: false,
    detail: `not measured: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`,
    unmeasured: true,
  };
}

/**
 * Runs each source's probes through `batch` (one call per `batchMax` probes, one after the other for a source),
 * `sourcesAtOnce` sources at a time, and hands every outcome to its probe's `finish`. A batch that fails, or that
 * answers with the wrong number of results, is tried once more after every source's first pass, with a quarter as
 * many sources at once: a batch's command is bounded by its longest probe plus a margin, and on a host starved of
 * CPU (many probes and guests at once) a whole source would otherwise read as unmeasured. What fails twice is
 * unmeasured, saying so.
 */
export async function probeBySource<S>(
  groups: ReadonlyMap<S, readonly PendingProbe[]>,
  batch: (src: S, probes: ProbeSpec[]) => Promise<ProbeResult[]>,
  opts: { sourcesAtOnce: number; batchMax: number },
): Promise<void> {
  const failed: Array<{ src: S; chunk: readonly PendingProbe[] }> = [];
  const run = async (src: S, chunk: readonly PendingProbe[]): Promise<ProbeResult[] | Error> =>
    batch(
      src,
      chunk.map((p) => p.probe),
    ).then(
      (r) =>
        r.length === chunk.length ? r : new Error(`${r.length} result(s) for ${chunk.length} probe(s)`),
      (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
    );
  const finish = (chunk: readonly PendingProbe[], results: ProbeResult[]) =>
    Promise.all(chunk.map((p, k) => p.finish(results[k]!)));
  await limit(
    [...groups].map(([src, list]) => async () => {
      for (let i = 0; i < list.length; i += opts.batchMax) {
        const chunk = list.slice(i, i + opts.batchMax);
        const results = await run(src, chunk);
        if (results instanceof Error) failed.push({ src, chunk });
        else await finish(chunk, results);
      }
    }),
    opts.sourcesAtOnce,
  );
  await limit(
    failed.map(({ src, chunk }) => async () => {
      const results = await run(src, chunk);
      await finish(
        chunk,
        results instanceof Error ? chunk.map(() => notMeasured(`${firstLine(results)} (tried twice)`)) : results,
      );
    }),
    Math.max(1, Math.floor(opts.sourcesAtOnce / 4)),
  );
}

function firstLine(e: Error): string {
  return e.message.split('\n')[0] ?? '';
}

/** Runs `jobs` with at most `n` at a time; results in job order. */
export async function limit<T>(jobs: Array<() => Promise<T>>, n: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, jobs.length) }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]!();
      }
    }),
  );
  return out;
}

/** The unbound twin of each VM source (its probes leave by the guest's routes), one object per source. */
const unboundSources = new WeakMap<VmEndpoint, VmEndpoint>();
export function unbound(src: VmEndpoint): VmEndpoint {
  let u = unboundSources.get(src);
  if (!u) {
    const { ifname: _bound, ...rest } = src;
    u = rest;
    unboundSources.set(src, u);
  }
  return u;
}
