import { describe, expect, it } from 'vitest';
import { renderSeries } from './render.js';

describe('metrics page rendering', () => {
  it("escapes an agent's label values so that no value can end its line or add a series", async () => {
    const page = await renderSeries([
      {
        name: 'vmlink_vm_running',
        labels: { host: 'h1', vm: 'a"b\\c\nvmlink_host_up{host="x"} 1' },
        value: 1,
      },
      { name: 'vmlink_host_up', labels: { host: 'h1' }, value: 1 },
    ]);
    expect(page).toContain('vmlink_vm_running{host="h1",vm="a\\"b\\\\c\\nvmlink_host_up{host=\\"x\\"} 1"} 1');
    const samples = page.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(samples).toHaveLength(2);
    expect(samples.filter((l) => l.startsWith('vmlink_host_up'))).toEqual(['vmlink_host_up{host="h1"} 1']);
  });

  it('renders catalog names only, with their type, and a counter at the collected total', async () => {
    const page = await renderSeries([
      { name: 'process_cpu_seconds_total', labels: {}, value: 5 },
      { name: 'vmlink_vm_cpu_seconds_total', labels: { host: 'h1', vm: 'v' }, value: 0 },
      { name: 'vmlink_vm_cpu_seconds_total', labels: { host: 'h1', vm: 'w' }, value: 12.5 },
    ]);
    expect(page).not.toContain('process_cpu');
    expect(page).toContain('# TYPE vmlink_vm_cpu_seconds_total counter');
    expect(page).toContain('vmlink_vm_cpu_seconds_total{host="h1",vm="v"} 0');
    expect(page).toContain('vmlink_vm_cpu_seconds_total{host="h1",vm="w"} 12.5');
  });
});
