// Agent samples built in tests (the shape `GET /v1/metrics` answers), parsed by the real schema so a test never feeds
// the collector what an agent could not send.
import { type AgentMetrics, AgentMetricsSchema } from '../../shared/metrics.js';

const counters = (n: number) => ({
  rxBytes: n,
  txBytes: 2 * n,
  rxPackets: n,
  txPackets: n,
  rxDropped: 1,
  txDropped: 2,
  rxErrors: 0,
  txErrors: 0,
});

/** A host with `vms` VMs (`vm0`..), each with a disk and a NIC; CPU seconds as given. */
export function sampleOf(
  host: string,
  at: number,
  o: { cpu?: number; vmCpu?: number; vms?: number; rss?: number; scope?: 'machine' | 'processes' } = {},
): AgentMetrics {
  return AgentMetricsSchema.parse({
    host,
    at,
    hostMetrics: {
      scope: o.scope ?? 'processes',
      cpus: 4,
      cpuSecondsTotal: o.cpu ?? 100,
      memoryTotalBytes: 8 * 2 ** 30,
      memoryUsedBytes: 2 * 2 ** 30,
      filesystems: [{ path: '/var/lib/vmlink', sizeBytes: 100e9, usedBytes: 25e9 }],
      interfaces: [{ name: 'eth0', ...counters(1000) }],
    },
    vms: Array.from({ length: o.vms ?? 1 }, (_, i) => ({
      name: `vm${i}`,
      running: true,
      cpuSecondsTotal: o.vmCpu ?? 10,
      memoryRssBytes: o.rss ?? 300 * 2 ** 20,
      memoryConfiguredBytes: 512 * 2 ** 20,
      disks: [{ disk: 'disk0', readBytes: 4096, writeBytes: 8192, readOps: 1, writeOps: 2 }],
      nics: [{ nic: 'nic0', tap: `vl-t${i}`, ...counters(500) }],
    })),
    networks: [{ network: 'lan', device: 'vl-br-lan', ...counters(700) }],
    pools: [{ pool: 'local', sizeBytes: 1000, usedBytes: 850 }],
  });
}
