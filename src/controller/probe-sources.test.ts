import { describe, expect, it } from 'vitest';
import type { ProbeSpec } from '../exec/probe.js';
import type { ProbeResult } from '../shared/results.js';
import { type PendingProbe, probeBySource } from './probe-sources.js';

const ping = (target: string): ProbeSpec => ({ kind: 'ping', target, timeoutMs: 1000 });

/** Pending probes of each source, recording each outcome under `src>target`. */
function pendingOf(sources: Record<string, string[]>, seen: Map<string, ProbeResult>) {
  const groups = new Map<string, PendingProbe[]>();
  for (const [src, targets] of Object.entries(sources))
    groups.set(
      src,
      targets.map((t) => ({
        probe: ping(t),
        finish: async (r) => {
          seen.set(`${src}>${t}`, r);
        },
      })),
    );
  return groups;
}

const echo = (probes: ProbeSpec[]): ProbeResult[] =>
  probes.map((p) => ({ reachable: true, rttMs: 1, detail: `reply from ${p.target}` }));

describe('probing by source', () => {
  it('sends one batch per source, cut at the batch size, and routes each outcome to its own probe', async () => {
    const seen = new Map<string, ProbeResult>();
    const calls: Array<[string, string[]]> = [];
    await probeBySource(
      pendingOf({ a: ['1', '2', '3', '4', '5'], b: ['6'] }, seen),
      async (src, probes) => {
        calls.push([src, probes.map((p) => p.target)]);
        return echo(probes);
      },
      { sourcesAtOnce: 4, batchMax: 2 },
    );
    expect(calls.sort()).toEqual([
      ['a', ['1', '2']],
      ['a', ['3', '4']],
      ['a', ['5']],
      ['b', ['6']],
    ]);
    for (const [k, r] of seen) expect(r.detail).toBe(`reply from ${k.split('>')[1]}`);
    expect(seen.size).toBe(6);
  });

  it('leaves the probes of a failed or short batch unmeasured, and the other sources measured', async () => {
    const seen = new Map<string, ProbeResult>();
    await probeBySource(
      pendingOf({ down: ['1', '2'], short: ['3', '4'], up: ['5'] }, seen),
      async (src, probes) => {
        if (src === 'down') throw new Error('agent of host2 did not answer\nstack');
        if (src === 'short') return echo(probes).slice(1);
        return echo(probes);
      },
      { sourcesAtOnce: 2, batchMax: 10 },
    );
    expect(seen.get('down>1')).toEqual({
      reachable: false,
      detail: 'not measured: agent of host2 did not answer (tried twice)',
      unmeasured: true,
    });
    expect(seen.get('short>3')).toMatchObject({ reachable: false, unmeasured: true });
    expect(seen.get('short>4')).toMatchObject({ reachable: false, unmeasured: true });
    expect(seen.get('up>5')).toMatchObject({ reachable: true });
  });

  it('tries a failed batch once more after the first pass, and keeps what the second try measured', async () => {
    const seen = new Map<string, ProbeResult>();
    const tries = new Map<string, number>();
    const order: string[] = [];
    await probeBySource(
      pendingOf({ busy: ['1', '2'], up: ['3'] }, seen),
      async (src, probes) => {
        const n = (tries.get(src) ?? 0) + 1;
        tries.set(src, n);
        order.push(`${src}#${n}`);
        if (src === 'busy' && n === 1) throw new Error('command failed (timed out after 5000 ms)');
        return echo(probes);
      },
      { sourcesAtOnce: 4, batchMax: 10 },
    );
    expect(seen.get('busy>1')).toMatchObject({ reachable: true, detail: 'reply from 1' });
    expect(seen.get('busy>2')).toMatchObject({ reachable: true });
    expect(tries).toEqual(new Map([['busy', 2], ['up', 1]]));
    // The second try waits for every source's first pass.
    expect(order.at(-1)).toBe('busy#2');
  });

  it('keeps at most `sourcesAtOnce` sources probing at once', async () => {
    let now = 0;
    let most = 0;
    const sources = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`s${i}`, ['1', '2']]));
    await probeBySource(
      pendingOf(sources, new Map()),
      async (_src, probes) => {
        most = Math.max(most, ++now);
        await new Promise((r) => setTimeout(r, 5));
        now--;
        return echo(probes);
      },
      { sourcesAtOnce: 3, batchMax: 1 },
    );
    expect(most).toBe(3);
  });
});
