import { describe, expect, it } from 'vitest';
import type { HostReport } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import type { AgentPort } from './hosts.js';
import { ReportCache, withReportCache } from './report-cache.js';

const report = (tag: string) => ({ tag, vms: [], networks: [] }) as unknown as HostReport;
const spec = loadSpec('version: 1\nhosts: [{ name: h1, agent: "unix:///fake/h1.sock" }]\n');

/** A clock the test moves. */
function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

/** An agent whose report answers with the current `tag`, and whose `act` can be held open. */
function fakeAgent() {
  const state = { tag: 'r1', reports: 0, fail: false };
  let release: (() => void) | undefined;
  const agent = {
    report: async () => {
      state.reports++;
      if (state.fail) throw new Error('cannot reach the agent of h1: ECONNREFUSED');
      return report(state.tag);
    },
    health: async () => ({ ok: true, version: 'fake' }),
    metrics: async () => ({}),
    act: () =>
      new Promise<void>((r) => {
        release = r;
      }),
  } as unknown as AgentPort;
  return { agent, state, release: () => release?.() };
}

describe('the report cache', () => {
  it('serves a kept report with its age, and not once older than its maximum age', () => {
    const c = clock();
    const cache = new ReportCache({ now: c.now, maxAgeMs: 10_000 });
    expect(cache.report('h1')).toBeUndefined();
    cache.putReport('h1', report('a'), cache.generation('h1'));
    c.advance(4_000);
    expect(cache.report('h1')).toEqual({ value: report('a'), ageMs: 4_000 });
    c.advance(6_001);
    expect(cache.report('h1')).toBeUndefined();
  });

  it('a cached answer is never shown as age 0 (which means asked live)', () => {
    const cache = new ReportCache({ now: () => 5 });
    cache.putReport('h1', report('a'), cache.generation('h1'));
    expect(cache.report('h1')?.ageMs).toBe(1);
  });

  it('drops a report fetched before a stale mark, even when its answer arrives after it', () => {
    const cache = new ReportCache({ now: clock().now });
    const gen = cache.generation('h1'); // a refresh starts...
    cache.markStale('h1'); // ...an action goes out meanwhile...
    cache.putReport('h1', report('before'), gen); // ...and the refresh's answer arrives: not kept
    expect(cache.report('h1')).toBeUndefined();
    cache.putReport('h1', report('after'), cache.generation('h1'));
    expect(cache.report('h1')?.value).toEqual(report('after'));
    cache.markStale('h1');
    expect(cache.report('h1')).toBeUndefined();
  });

  it('holds guest addresses back while a guest has not answered for less than the patience', () => {
    const c = clock();
    const cache = new ReportCache({ now: c.now, guestPatienceMs: 30_000 });
    const booting = new Map([
      ['web', new Map([['52:54:00:00:00:01', ['10.0.0.5/24']]])],
      ['db', undefined],
    ]);
    cache.putGuests('h1', booting, cache.generation('h1'));
    expect(cache.guests('h1')).toBeUndefined();
    c.advance(10_000);
    cache.putGuests('h1', booting, cache.generation('h1')); // still no answer from db: patience counts from the first
    c.advance(20_000);
    expect(cache.guests('h1')?.value.get('db')).toBeUndefined();
    expect(cache.guests('h1')?.ageMs).toBe(20_000);
    // Every guest answered: served at once.
    const all = new Map([['web', new Map([['52:54:00:00:00:01', ['10.0.0.5/24']]])]]);
    cache.putGuests('h1', all, cache.generation('h1'));
    expect(cache.guests('h1')?.value).toBe(all);
  });

  it('forgets hosts that left the spec', () => {
    const cache = new ReportCache();
    cache.putReport('h1', report('a'), cache.generation('h1'));
    cache.putReport('h2', report('b'), cache.generation('h2'));
    cache.keepOnly(new Set(['h2']));
    expect(cache.report('h1')).toBeUndefined();
    expect(cache.report('h2')).toBeDefined();
  });
});

describe('the agent factory hook', () => {
  it('keeps every report fetched, leaves it on reads, and marks the host stale on an action until it settled', async () => {
    const cache = new ReportCache();
    const fake = fakeAgent();
    const agents = withReportCache(() => fake.agent, cache);
    await agents(spec, 'h1').report();
    expect(cache.report('h1')?.value).toEqual(report('r1'));
    await agents(spec, 'h1').health();
    await agents(spec, 'h1').metrics!();
    expect(cache.report('h1')).toBeDefined();
    // An action: stale from the moment it leaves...
    const acting = agents(spec, 'h1').act({ kind: 'vm.start', name: 'web' });
    expect(cache.report('h1')).toBeUndefined();
    // ...a report fetched while it runs is kept, but marked stale again once the action settled.
    fake.state.tag = 'during';
    await agents(spec, 'h1').report();
    expect(cache.report('h1')?.value).toEqual(report('during'));
    fake.release();
    await acting;
    expect(cache.report('h1')).toBeUndefined();
    fake.state.tag = 'r2';
    await agents(spec, 'h1').report();
    expect(cache.report('h1')?.value).toEqual(report('r2'));
  });

  it('a report that fails marks the host stale: nothing kept is served for an agent that did not answer', async () => {
    const cache = new ReportCache();
    const fake = fakeAgent();
    const agents = withReportCache(() => fake.agent, cache);
    await agents(spec, 'h1').report();
    fake.state.fail = true;
    await expect(agents(spec, 'h1').report()).rejects.toThrow(/ECONNREFUSED/);
    expect(cache.report('h1')).toBeUndefined();
  });

  it('keeps optional methods absent (callers test for them) and other properties as they are', () => {
    const agents = withReportCache(() => fakeAgent().agent, new ReportCache());
    const a = agents(spec, 'h1');
    expect(a.guestList).toBeUndefined();
    expect(a.migrationStart).toBeUndefined();
    expect(typeof a.report).toBe('function');
  });
});
