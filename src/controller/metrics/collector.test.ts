import { describe, expect, it } from 'vitest';
import { UnavailableError } from '../../shared/errors.js';
import type { AgentMetrics, MetricsSnapshot } from '../../shared/metrics.js';
import { loadSpec } from '../../spec/load.js';
import { MetricsCollector } from './collector.js';
import { seriesKey } from './derive.js';
import { sampleOf } from './test-samples.test-util.js';

const spec = loadSpec(
  `version: 1
hosts:
  - { name: h1, agent: "unix:///nonexistent/h1.sock" }
  - { name: h2, agent: "unix:///nonexistent/h2.sock" }
`,
  'spec.yaml',
);

/** Two fake agents whose next samples the test sets; `null`: the agent does not answer. */
function rig() {
  const next = new Map<string, AgentMetrics | null>();
  const asked: string[] = [];
  let clock = 1_000_000;
  let wall = 5_000_000;
  const collector = new MetricsCollector(
    {
      spec: async () => spec,
      agents: (_s, host) => ({
        metrics: async () => {
          asked.push(host);
          const s = next.get(host);
          if (!s) throw new UnavailableError(`cannot reach the agent of ${host}`);
          return s;
        },
      }),
      heartbeats: async () => ({
        h1: { state: 'up', missed: 0, since: '', lastSeen: new Date(wall - 4_000).toISOString() },
      }),
    },
    { now: () => clock, wall: () => wall, intervalMs: 15_000 },
  );
  return {
    collector,
    next,
    asked,
    tick: (ms: number) => {
      clock += ms;
      wall += ms;
    },
    get wall() {
      return wall;
    },
  };
}

const value = (snap: MetricsSnapshot, name: string, labels: Record<string, string>) =>
  snap.series.find((s) => seriesKey(s.name, s.labels) === seriesKey(name, labels))?.value;

describe('metrics collector', () => {
  it("collects every spec host, marks the silent one down, and derives shares from a host's second sample", async () => {
    const r = rig();
    r.next.set('h1', sampleOf('h1', r.wall, { cpu: 100, vmCpu: 10 }));
    let snap = await r.collector.collectNow();
    expect(snap.at).toBe(1_000_000);
    expect(value(snap, 'vmlink_host_up', { host: 'h1' })).toBe(1);
    expect(value(snap, 'vmlink_host_up', { host: 'h2' })).toBe(0);
    expect(value(snap, 'vmlink_host_heartbeat_age_seconds', { host: 'h1' })).toBe(4);
    expect(value(snap, 'vmlink_host_heartbeat_age_seconds', { host: 'h2' })).toBeUndefined();
    expect(value(snap, 'vmlink_host_clock_offset_seconds', { host: 'h1' })).toBe(0);
    expect(value(snap, 'vmlink_host_cpu_utilization', { host: 'h1' })).toBeUndefined();
    expect(snap.series.some((s) => s.labels.host === 'h2' && s.name !== 'vmlink_host_up')).toBe(false);
    expect(value(snap, 'vmlink_collect_duration_seconds', {})).toBeGreaterThanOrEqual(0);

    r.tick(15_000);
    // h1's clock runs 7 s ahead of the controller's.
    r.next.set('h1', sampleOf('h1', r.wall + 7_000, { cpu: 130, vmCpu: 40 }));
    r.next.set('h2', sampleOf('h2', r.wall));
    snap = await r.collector.collectNow();
    expect(value(snap, 'vmlink_host_cpu_utilization', { host: 'h1' })).toBeCloseTo(30 / 22 / 4);
    expect(value(snap, 'vmlink_vm_cpu_utilization', { host: 'h1', vm: 'vm0' })).toBeCloseTo(30 / 22);
    expect(value(snap, 'vmlink_host_clock_offset_seconds', { host: 'h1' })).toBe(7);
    expect(value(snap, 'vmlink_host_up', { host: 'h2' })).toBe(1);
    expect(r.collector.latest()).toBe(snap);
  });

  it('drops the series of a host that stops answering, and of a VM that went away, from the snapshot and the page', async () => {
    const r = rig();
    r.next.set('h1', sampleOf('h1', r.wall, { vms: 2 }));
    r.next.set('h2', sampleOf('h2', r.wall));
    await r.collector.collectNow();
    let page = await r.collector.render();
    expect(page).toContain('vmlink_vm_running{host="h1",vm="vm1"} 1');
    expect(page).toContain('vmlink_vm_running{host="h2",vm="vm0"} 1');
    r.tick(15_000);
    r.next.set('h1', sampleOf('h1', r.wall, { vms: 1 }));
    r.next.set('h2', null);
    await r.collector.collectNow();
    page = await r.collector.render();
    expect(page).toContain('vmlink_vm_running{host="h1",vm="vm0"} 1');
    expect(page).not.toContain('vm="vm1"');
    expect(page).not.toMatch(/host="h2",vm=/);
    expect(page).toContain('vmlink_host_up{host="h2"} 0');
  });

  it('refuses a sample an agent sends for another host', async () => {
    const r = rig();
    r.next.set('h1', sampleOf('h2', r.wall));
    const snap = await r.collector.collectNow();
    expect(value(snap, 'vmlink_host_up', { host: 'h1' })).toBe(0);
    expect(snap.series.filter((s) => s.labels.host === 'h1').map((s) => s.name)).toEqual([
      'vmlink_host_up',
      'vmlink_host_heartbeat_age_seconds',
    ]);
  });

  it('keeps a history per series on its clock, and runs listeners in turn before collectNow resolves', async () => {
    const r = rig();
    const heard: number[] = [];
    const off = r.collector.onCollected(async (s) => {
      await new Promise((res) => setTimeout(res, 5));
      heard.push(s.at);
    });
    r.collector.onCollected(() => {
      throw new Error('a broken listener does not stop the others');
    });
    for (const rss of [100, 200, 300]) {
      r.next.set('h1', sampleOf('h1', r.wall, { rss }));
      const snap = await r.collector.collectNow();
      expect(heard.at(-1)).toBe(snap.at);
      r.tick(15_000);
    }
    expect(r.collector.history('vmlink_vm_memory_rss_bytes', { host: 'h1', vm: 'vm0' }, 0)).toEqual([
      { at: 1_000_000, value: 100 },
      { at: 1_015_000, value: 200 },
      { at: 1_030_000, value: 300 },
    ]);
    expect(
      r.collector.history('vmlink_vm_memory_rss_bytes', { host: 'h1', vm: 'vm0' }, 1_015_000),
    ).toHaveLength(2);
    off();
    await r.collector.collectNow();
    expect(heard).toHaveLength(3);
  });

  it('serializes collections: two at once ask every agent twice, one after the other', async () => {
    const r = rig();
    r.next.set('h1', sampleOf('h1', r.wall));
    r.next.set('h2', sampleOf('h2', r.wall));
    const [a, b] = await Promise.all([r.collector.collectNow(), r.collector.collectNow()]);
    expect(a).not.toBe(b);
    expect(r.asked).toEqual(['h1', 'h2', 'h1', 'h2']);
    expect(r.collector.latest()).toBe(b);
  });

  it("renders the controller's own series beside the collected ones, each catalog name once", async () => {
    const r = rig();
    r.next.set('h1', sampleOf('h1', r.wall));
    await r.collector.collectNow();
    r.collector.series.observeApply('succeeded', 3.2);
    r.collector.series.observeVerify('mismatch', 12, { ok: 5, mismatch: 1 });
    r.collector.setAlertCounts([{ rule: 'host-cpu', state: 'firing', severity: 'warning', count: 1 }]);
    let page = await r.collector.render();
    expect(page).toContain('vmlink_apply_duration_seconds_bucket{le="5",outcome="succeeded"} 1');
    expect(page).toContain('vmlink_verify_cells{result="mismatch"} 1');
    expect(page).toContain('vmlink_alerts{rule="host-cpu",state="firing",severity="warning"} 1');
    expect(page).toContain('# TYPE vmlink_host_cpu_seconds_total counter');
    const types = [...page.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]);
    expect(new Set(types).size).toBe(types.length);
    for (const t of types) expect(t).toMatch(/^vmlink_/);
    r.collector.series.setAlerts([]);
    page = await r.collector.render();
    expect(page).not.toContain('vmlink_alerts{');
  });
});

describe('metrics collector timer', () => {
  it('collects on its period once started, and a collection cut by stop tells no listener', async () => {
    let release: () => void = () => undefined;
    let hang = false;
    let asked = 0;
    const collector = new MetricsCollector(
      {
        spec: async () => spec,
        agents: (_s, host) => ({
          metrics: async () => {
            asked++;
            if (hang) await new Promise<void>((res) => (release = res));
            return sampleOf(host, Date.now());
          },
        }),
      },
      { intervalMs: 20 },
    );
    const heard: number[] = [];
    collector.onCollected((s) => void heard.push(s.at));
    collector.start();
    await expect.poll(() => heard.length, { timeout: 5_000 }).toBeGreaterThanOrEqual(3);
    hang = true;
    const before = asked;
    await expect.poll(() => asked, { timeout: 5_000 }).toBeGreaterThan(before);
    const told = heard.length;
    await collector.stop();
    release();
    // The cut collection still ends (its snapshot is the newest) but nobody hears of it, and no new one starts.
    await expect.poll(() => collector.latest().series.length, { timeout: 5_000 }).toBeGreaterThan(0);
    await new Promise((res) => setTimeout(res, 100));
    expect(heard.length).toBe(told);
  });
});
