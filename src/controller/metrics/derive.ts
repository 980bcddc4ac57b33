// From one agent sample (untrusted, already schema-checked) to the catalog's series: the raw figures, the shares
// (`*_utilization`) and the clock offset. Pure functions: the collector feeds them, tests call them directly.
import type { AgentMetrics, InterfaceCounters, Series } from '../../shared/metrics.js';

/** A series' identity: its name and its labels in key order (history and de-duplication key). */
export function seriesKey(name: string, labels: Readonly<Record<string, string>>): string {
  const keys = Object.keys(labels).sort();
  return `${name}{${keys.map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}`;
}

/** Collects series, keeping the first of any name and labels given twice (a sample naming a VM twice). */
class SeriesList {
  readonly items: Series[] = [];
  private readonly seen = new Set<string>();
  add(name: string, labels: Record<string, string>, value: number): void {
    const key = seriesKey(name, labels);
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.items.push({ name, labels, value });
  }
}

/**
 * The figures of one sample as series labelled with `host` (the spec's name of the host asked, never a name the
 * agent chose). Shares that need one sample only (memory, pools) are here; CPU shares need two (`cpuShares`).
 */
export function sampleSeries(host: string, s: AgentMetrics): Series[] {
  const out = new SeriesList();
  const h = s.hostMetrics;
  out.add('vmlink_host_cpus', { host }, h.cpus);
  out.add('vmlink_host_cpu_seconds_total', { host }, h.cpuSecondsTotal);
  out.add('vmlink_host_memory_total_bytes', { host }, h.memoryTotalBytes);
  out.add('vmlink_host_memory_used_bytes', { host }, h.memoryUsedBytes);
  const mem = share(h.memoryUsedBytes, h.memoryTotalBytes);
  if (mem !== undefined) out.add('vmlink_host_memory_utilization', { host }, mem);
  for (const f of h.filesystems) {
    out.add('vmlink_host_filesystem_size_bytes', { host, path: f.path }, f.sizeBytes);
    out.add('vmlink_host_filesystem_used_bytes', { host, path: f.path }, f.usedBytes);
  }
  for (const i of h.interfaces) {
    const labels = { host, interface: i.name };
    out.add('vmlink_host_network_receive_bytes_total', labels, i.rxBytes);
    out.add('vmlink_host_network_transmit_bytes_total', labels, i.txBytes);
    out.add('vmlink_host_network_receive_dropped_total', labels, i.rxDropped);
    out.add('vmlink_host_network_transmit_dropped_total', labels, i.txDropped);
  }
  for (const vm of s.vms) {
    const v = { host, vm: vm.name };
    out.add('vmlink_vm_running', v, vm.running ? 1 : 0);
    out.add('vmlink_vm_cpu_seconds_total', v, vm.cpuSecondsTotal);
    out.add('vmlink_vm_memory_rss_bytes', v, vm.memoryRssBytes);
    out.add('vmlink_vm_memory_configured_bytes', v, vm.memoryConfiguredBytes);
    for (const d of vm.disks) {
      const labels = { ...v, disk: d.disk };
      out.add('vmlink_vm_disk_read_bytes_total', labels, d.readBytes);
      out.add('vmlink_vm_disk_written_bytes_total', labels, d.writeBytes);
      out.add('vmlink_vm_disk_read_ops_total', labels, d.readOps);
      out.add('vmlink_vm_disk_write_ops_total', labels, d.writeOps);
    }
    for (const n of vm.nics) {
      const labels = { ...v, nic: n.nic };
      out.add('vmlink_vm_network_receive_bytes_total', labels, n.rxBytes);
      out.add('vmlink_vm_network_transmit_bytes_total', labels, n.txBytes);
      out.add('vmlink_vm_network_receive_dropped_total', labels, n.rxDropped);
      out.add('vmlink_vm_network_transmit_dropped_total', labels, n.txDropped);
    }
  }
  for (const n of s.networks) {
    const labels = { host, network: n.network };
    out.add('vmlink_network_receive_bytes_total', labels, n.rxBytes);
    out.add('vmlink_network_transmit_bytes_total', labels, n.txBytes);
    out.add('vmlink_network_dropped_total', labels, dropped(n));
  }
  for (const p of s.pools) {
    const labels = { host, pool: p.pool };
    out.add('vmlink_pool_size_bytes', labels, p.sizeBytes);
    out.add('vmlink_pool_used_bytes', labels, p.usedBytes);
    const used = share(p.usedBytes, p.sizeBytes);
    if (used !== undefined) out.add('vmlink_pool_utilization', labels, used);
  }
  return out.items;
}

const dropped = (c: InterfaceCounters) => c.rxDropped + c.txDropped;

/** `used / total` within 0..1; undefined when there is no total. */
function share(used: number, total: number): number | undefined {
  return total > 0 ? Math.min(1, used / total) : undefined;
}

/**
 * CPU shares between two samples of one host, over the agent's own clock (both `at` come from it, so the controller's
 * clock and the request's latency do not skew them). None where the window is empty or a counter went back (the
 * agent or a QEMU restarted): a rate across a reset would be a lie.
 */
export function cpuShares(host: string, prev: AgentMetrics | undefined, cur: AgentMetrics): Series[] {
  if (!prev) return [];
  const seconds = (cur.at - prev.at) / 1000;
  if (!(seconds > 0)) return [];
  const out = new SeriesList();
  const busy = cur.hostMetrics.cpuSecondsTotal - prev.hostMetrics.cpuSecondsTotal;
  if (busy >= 0)
    out.add('vmlink_host_cpu_utilization', { host }, Math.min(1, busy / seconds / cur.hostMetrics.cpus));
  const before = new Map(prev.vms.map((v) => [v.name, v.cpuSecondsTotal]));
  for (const vm of cur.vms) {
    const was = before.get(vm.name);
    if (was === undefined || vm.cpuSecondsTotal < was) continue;
    out.add('vmlink_vm_cpu_utilization', { host, vm: vm.name }, (vm.cpuSecondsTotal - was) / seconds);
  }
  return out.items;
}

/**
 * The agent's clock minus the controller's, in seconds, as little as the observation allows: the agent read its
 * clock somewhere between `sentAt` and `answeredAt` (the controller's clock), so any offset inside that window may be
 * the request's latency alone and counts as 0; outside it, the distance to the window's nearer edge. A slow answer
 * thus never shows as drift, and a drift shown is at least that large.
 */
export function clockOffsetSeconds(agentAt: number, sentAt: number, answeredAt: number): number {
  if (agentAt > answeredAt) return (agentAt - answeredAt) / 1000;
  if (agentAt < sentAt) return (agentAt - sentAt) / 1000;
  return 0;
}
