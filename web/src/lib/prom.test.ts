import { describe, expect, it } from 'vitest';
import { formatValue, HISTORY_POINTS, LINES_MAX, linePath, MetricHistory, parseExposition } from './prom.js';

const PAGE = `# HELP vmlink_host_cpu_utilization CPU
# TYPE vmlink_host_cpu_utilization gauge
vmlink_host_cpu_utilization{host="h1"} 0.25
vmlink_host_cpu_utilization{host="h2",note="a \\"q\\", b"} 0.5
vmlink_vm_memory_rss_bytes{vm="web",host="h1"} 1048576 1700000000000
garbage line here
vmlink_bad{host="h1" 1
vmlink_up 1
`;

describe('exposition parsing', () => {
  it('reads samples with labels and escapes, skipping comments and bad lines', () => {
    const s = parseExposition(PAGE);
    expect(s).toEqual([
      { name: 'vmlink_host_cpu_utilization', labels: { host: 'h1' }, value: 0.25 },
      { name: 'vmlink_host_cpu_utilization', labels: { host: 'h2', note: 'a "q", b' }, value: 0.5 },
      { name: 'vmlink_vm_memory_rss_bytes', labels: { vm: 'web', host: 'h1' }, value: 1048576 },
      { name: 'vmlink_up', labels: {}, value: 1 },
    ]);
  });
});

describe('metric history', () => {
  it('keeps one bounded line per label value, sorted', () => {
    const h = new MetricHistory();
    for (let t = 0; t < HISTORY_POINTS + 10; t++) h.add(t, parseExposition(PAGE));
    const lines = h.lines('vmlink_host_cpu_utilization');
    expect(lines.map((l) => l.name)).toEqual(['h1', 'h2']);
    expect(lines[0]!.points).toHaveLength(HISTORY_POINTS);
    expect(lines[0]!.points[0]).toEqual([10, 0.25]);
    expect(h.lines('vmlink_vm_memory_rss_bytes')[0]!.name).toBe('web');
  });

  it('draws at most LINES_MAX lines per chart', () => {
    const h = new MetricHistory();
    h.add(
      0,
      Array.from({ length: LINES_MAX + 5 }, (_, i) => ({
        name: 'vmlink_vm_cpu_utilization',
        labels: { vm: `v${i}` },
        value: 0,
      })),
    );
    expect(h.lines('vmlink_vm_cpu_utilization')).toHaveLength(LINES_MAX);
  });
});

describe('charts', () => {
  it('maps time to x and value to y, clamped to the box', () => {
    const d = linePath(
      [
        [0, 0],
        [50, 0.5],
        [100, 2],
      ],
      { width: 100, height: 10, t0: 0, t1: 100, max: 1 },
    );
    expect(d).toBe('M 0.0 10.0 L 50.0 5.0 L 100.0 0.0');
    expect(linePath([], { width: 1, height: 1, t0: 0, t1: 1, max: 1 })).toBe('');
  });

  it('formats values in their unit', () => {
    expect(formatValue(0.256, 'ratio')).toBe('25.6 %');
    expect(formatValue(3 * 1024 * 1024, 'bytes')).toBe('3.0 MiB');
    expect(formatValue(512, 'bytes')).toBe('512 B');
    expect(formatValue(2.04, 'seconds')).toBe('2.0 s');
  });
});
