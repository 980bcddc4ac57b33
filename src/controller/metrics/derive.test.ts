import { describe, expect, it } from 'vitest';
import { METRICS } from '../../shared/metrics.js';
import { clockOffsetSeconds, cpuShares, sampleSeries, seriesKey } from './derive.js';
import { sampleOf } from './test-samples.test-util.js';

const value = (series: ReturnType<typeof sampleSeries>, name: string, labels: Record<string, string>) =>
  series.find((s) => seriesKey(s.name, s.labels) === seriesKey(name, labels))?.value;

describe('metrics derivation', () => {
  it("labels every figure with the asked host's name and only with its catalog labels", () => {
    const series = sampleSeries('h1', sampleOf('h1', 1_000, { vms: 2 }));
    for (const s of series) {
      const info = METRICS[s.name as keyof typeof METRICS];
      expect(info, s.name).toBeDefined();
      expect(Object.keys(s.labels).sort()).toEqual([...info.labels].sort());
      expect(s.labels.host).toBe('h1');
    }
    expect(
      value(series, 'vmlink_vm_disk_written_bytes_total', { host: 'h1', vm: 'vm1', disk: 'disk0' }),
    ).toBe(8192);
    expect(
      value(series, 'vmlink_vm_network_transmit_bytes_total', { host: 'h1', vm: 'vm0', nic: 'nic0' }),
    ).toBe(1000);
    expect(value(series, 'vmlink_network_dropped_total', { host: 'h1', network: 'lan' })).toBe(3);
    expect(value(series, 'vmlink_pool_utilization', { host: 'h1', pool: 'local' })).toBe(0.85);
    expect(value(series, 'vmlink_host_memory_utilization', { host: 'h1' })).toBe(0.25);
  });

  it('keeps the first of a VM reported twice (a counter must not add up duplicates)', () => {
    const s = sampleOf('h1', 1_000, { vms: 1 });
    s.vms.push({ ...s.vms[0]!, cpuSecondsTotal: 999 });
    const series = sampleSeries('h1', s);
    expect(series.filter((x) => x.name === 'vmlink_vm_cpu_seconds_total')).toEqual([
      { name: 'vmlink_vm_cpu_seconds_total', labels: { host: 'h1', vm: 'vm0' }, value: 10 },
    ]);
  });

  it("derives CPU shares over the agent's clock, none across a counter reset or an empty window", () => {
    const a = sampleOf('h1', 10_000, { cpu: 100, vmCpu: 10 });
    const b = sampleOf('h1', 20_000, { cpu: 120, vmCpu: 25 });
    expect(cpuShares('h1', undefined, a)).toEqual([]);
    const shares = cpuShares('h1', a, b);
    // 20 busy seconds over 10 s and 4 CPUs; the VM used 1.5 CPUs.
    expect(value(shares, 'vmlink_host_cpu_utilization', { host: 'h1' })).toBe(0.5);
    expect(value(shares, 'vmlink_vm_cpu_utilization', { host: 'h1', vm: 'vm0' })).toBe(1.5);
    const restarted = sampleOf('h1', 30_000, { cpu: 5, vmCpu: 1 });
    expect(cpuShares('h1', b, restarted)).toEqual([]);
    expect(cpuShares('h1', b, sampleOf('h1', 20_000, { cpu: 130 }))).toEqual([]);
    // More busy seconds than the CPUs can give (a skewed sample) is shown as full, never above.
    expect(
      value(cpuShares('h1', a, sampleOf('h1', 11_000, { cpu: 200 })), 'vmlink_host_cpu_utilization', {
        host: 'h1',
      }),
    ).toBe(1);
  });

  it('counts a clock offset only beyond the request window', () => {
    expect(clockOffsetSeconds(1_500, 1_000, 2_000)).toBe(0);
    expect(clockOffsetSeconds(7_000, 1_000, 2_000)).toBe(5);
    expect(clockOffsetSeconds(-2_000, 1_000, 2_000)).toBe(-3);
  });
});
