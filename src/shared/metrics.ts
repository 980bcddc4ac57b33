// The metrics contract (issue 14, docs/observability.md): what an agent reports (`GET /v1/metrics`), the series the
// controller keeps, and the catalog of every metric it exposes. Agent samples are untrusted input: strict and bounded.
import { z } from 'zod';

/** How often the controller collects every agent's sample. */
export const METRICS_COLLECT_INTERVAL_MS = 15_000;
/** How long the controller keeps each series' history (alerts' `for`, the doctor's memory trend). */
export const METRICS_HISTORY_MS = 60 * 60_000;
/** Bounds of one agent sample. */
export const METRICS_VMS_MAX = 4096;
export const METRICS_INTERFACES_MAX = 4096;
export const METRICS_DEVICES_PER_VM_MAX = 64;
export const METRICS_FILESYSTEMS_MAX = 64;
/** How long the controller waits for one agent's sample by default (below the collection interval). */
export const METRICS_AGENT_TIMEOUT_MS = 10_000;
/** Largest agent sample body the controller reads. */
export const METRICS_BODY_MAX_BYTES = 8 * 1024 * 1024;

const count = z.number().nonnegative().finite();
const label = z.string().min(1).max(128);

/** Counters of one network interface (kernel statistics). */
export const InterfaceCountersSchema = z
  .object({
    rxBytes: count,
    txBytes: count,
    rxPackets: count,
    txPackets: count,
    rxDropped: count,
    txDropped: count,
    rxErrors: count,
    txErrors: count,
  })
  .strict();
export type InterfaceCounters = z.infer<typeof InterfaceCountersSchema>;

/** One host's own figures. */
export const HostMetricsSchema = z
  .object({
    /**
     * `machine`: the whole machine (`/proc/stat`, `/proc/meminfo`); `processes`: the sum over the host's own
     * processes (a lab host, which shares its kernel with the others).
     */
    scope: z.enum(['machine', 'processes']),
    cpus: z.number().int().min(1).max(65_536),
    /** Busy CPU seconds (user + system + ...), monotonic while the agent runs. */
    cpuSecondsTotal: count,
    memoryTotalBytes: count,
    memoryUsedBytes: count,
    /** Filesystems holding the agent's state directory and its pools. */
    filesystems: z
      .array(z.object({ path: label, sizeBytes: count, usedBytes: count }).strict())
      .max(METRICS_FILESYSTEMS_MAX),
    /** The host's interfaces (in a lab: its namespace's), loopback excluded. */
    interfaces: z
      .array(z.object({ name: label }).strict().merge(InterfaceCountersSchema))
      .max(METRICS_INTERFACES_MAX),
  })
  .strict();
export type HostMetrics = z.infer<typeof HostMetricsSchema>;

/** One VM on the host, from its QEMU process and QMP. */
export const VmMetricsSchema = z
  .object({
    name: label,
    running: z.boolean(),
    cpuSecondsTotal: count,
    memoryRssBytes: count,
    memoryConfiguredBytes: count,
    /** Disks by their device id (`query-blockstats`). */
    disks: z
      .array(
        z
          .object({ disk: label, readBytes: count, writeBytes: count, readOps: count, writeOps: count })
          .strict(),
      )
      .max(METRICS_DEVICES_PER_VM_MAX),
    /** NICs by their device id, counted from the guest's side (the tap's tx is the NIC's rx). */
    nics: z
      .array(z.object({ nic: label, tap: label }).strict().merge(InterfaceCountersSchema))
      .max(METRICS_DEVICES_PER_VM_MAX),
  })
  .strict();
export type VmMetrics = z.infer<typeof VmMetricsSchema>;

/** `GET /v1/metrics` on an agent: one sample of its host. */
export const AgentMetricsSchema = z
  .object({
    host: label,
    /** The agent's clock when it took the sample (epoch ms): the doctor's clock-drift evidence. */
    at: z.number().int().nonnegative(),
    hostMetrics: HostMetricsSchema,
    vms: z.array(VmMetricsSchema).max(METRICS_VMS_MAX),
    /** Managed networks present on the host: their bridge's counters. */
    networks: z
      .array(z.object({ network: label, device: label }).strict().merge(InterfaceCountersSchema))
      .max(METRICS_INTERFACES_MAX),
    /** Pools served or mounted by the host. */
    pools: z
      .array(z.object({ pool: label, sizeBytes: count, usedBytes: count }).strict())
      .max(METRICS_FILESYSTEMS_MAX),
  })
  .strict();
export type AgentMetrics = z.infer<typeof AgentMetricsSchema>;

/** One value of one series: a metric name, its labels, and a number. */
export interface Series {
  name: string;
  labels: Readonly<Record<string, string>>;
  value: number;
}

/** The series at one instant (what alert rules and the doctor read). */
export interface MetricsSnapshot {
  /** The controller's clock (epoch ms) when the snapshot was made. */
  at: number;
  series: readonly Series[];
}

/** What the alert evaluator and the doctor read from the controller's collector. */
export interface MetricsSource {
  /** The newest snapshot (every metric of the catalog the collector has a value for). */
  latest(): MetricsSnapshot;
  /** One series' values since `sinceMs` (oldest first), from the bounded history. */
  history(
    name: string,
    labels: Readonly<Record<string, string>>,
    sinceMs: number,
  ): Array<{ at: number; value: number }>;
}

export type MetricType = 'gauge' | 'counter' | 'histogram';

/** One metric of the catalog. */
export interface MetricInfo {
  type: MetricType;
  help: string;
  labels: readonly string[];
}

const H = ['host'] as const;
const VM = ['host', 'vm'] as const;

/** Every metric the controller exposes at `GET /v1/metrics`. Alert rules may name these and their labels only. */
export const METRICS = {
  vmlink_host_up: {
    type: 'gauge',
    help: 'Whether the host agent answered the last collection (1) or not (0).',
    labels: H,
  },
  vmlink_host_heartbeat_age_seconds: {
    type: 'gauge',
    help: 'Seconds since the host agent last answered a heartbeat (while it answers, refreshed every 15 s).',
    labels: H,
  },
  vmlink_host_clock_offset_seconds: {
    type: 'gauge',
    help: "The host agent's clock minus the controller's, at the last collection.",
    labels: H,
  },
  vmlink_host_cpus: { type: 'gauge', help: 'CPUs of the host.', labels: H },
  vmlink_host_cpu_seconds_total: {
    type: 'counter',
    help: 'Busy CPU seconds of the host (a lab host: of its own processes).',
    labels: H,
  },
  vmlink_host_cpu_utilization: {
    type: 'gauge',
    help: 'Busy share of the host CPUs between the last two collections (0..1).',
    labels: H,
  },
  vmlink_host_memory_total_bytes: { type: 'gauge', help: 'Memory of the host.', labels: H },
  vmlink_host_memory_used_bytes: {
    type: 'gauge',
    help: 'Memory in use on the host (a lab host: by its own processes).',
    labels: H,
  },
  vmlink_host_memory_utilization: { type: 'gauge', help: 'Used share of the host memory (0..1).', labels: H },
  vmlink_host_filesystem_size_bytes: {
    type: 'gauge',
    help: 'Size of a filesystem of the host.',
    labels: ['host', 'path'],
  },
  vmlink_host_filesystem_used_bytes: {
    type: 'gauge',
    help: 'Used bytes of a filesystem of the host.',
    labels: ['host', 'path'],
  },
  vmlink_host_network_receive_bytes_total: {
    type: 'counter',
    help: 'Bytes received by a host interface.',
    labels: ['host', 'interface'],
  },
  vmlink_host_network_transmit_bytes_total: {
    type: 'counter',
    help: 'Bytes sent by a host interface.',
    labels: ['host', 'interface'],
  },
  vmlink_host_network_receive_dropped_total: {
    type: 'counter',
    help: 'Received packets a host interface dropped.',
    labels: ['host', 'interface'],
  },
  vmlink_host_network_transmit_dropped_total: {
    type: 'counter',
    help: 'Outgoing packets a host interface dropped.',
    labels: ['host', 'interface'],
  },
  vmlink_vm_running: { type: 'gauge', help: 'Whether the VM runs (1) or not (0).', labels: VM },
  vmlink_vm_cpu_seconds_total: {
    type: 'counter',
    help: 'CPU seconds of the VM (its QEMU process).',
    labels: VM,
  },
  vmlink_vm_cpu_utilization: {
    type: 'gauge',
    help: 'CPU use of the VM between the last two collections, in CPUs (1 = one CPU busy).',
    labels: VM,
  },
  vmlink_vm_memory_rss_bytes: {
    type: 'gauge',
    help: 'Resident memory of the VM (its QEMU process).',
    labels: VM,
  },
  vmlink_vm_memory_configured_bytes: { type: 'gauge', help: 'Memory the VM is configured with.', labels: VM },
  vmlink_vm_disk_read_bytes_total: {
    type: 'counter',
    help: 'Bytes read by a VM disk.',
    labels: ['host', 'vm', 'disk'],
  },
  vmlink_vm_disk_written_bytes_total: {
    type: 'counter',
    help: 'Bytes written by a VM disk.',
    labels: ['host', 'vm', 'disk'],
  },
  vmlink_vm_disk_read_ops_total: {
    type: 'counter',
    help: 'Read operations of a VM disk.',
    labels: ['host', 'vm', 'disk'],
  },
  vmlink_vm_disk_write_ops_total: {
    type: 'counter',
    help: 'Write operations of a VM disk.',
    labels: ['host', 'vm', 'disk'],
  },
  vmlink_vm_network_receive_bytes_total: {
    type: 'counter',
    help: 'Bytes a VM NIC received.',
    labels: ['host', 'vm', 'nic'],
  },
  vmlink_vm_network_transmit_bytes_total: {
    type: 'counter',
    help: 'Bytes a VM NIC sent.',
    labels: ['host', 'vm', 'nic'],
  },
  vmlink_vm_network_receive_dropped_total: {
    type: 'counter',
    help: 'Packets to a VM NIC dropped.',
    labels: ['host', 'vm', 'nic'],
  },
  vmlink_vm_network_transmit_dropped_total: {
    type: 'counter',
    help: 'Packets from a VM NIC dropped.',
    labels: ['host', 'vm', 'nic'],
  },
  vmlink_network_receive_bytes_total: {
    type: 'counter',
    help: "Bytes received by a network's bridge on a host.",
    labels: ['host', 'network'],
  },
  vmlink_network_transmit_bytes_total: {
    type: 'counter',
    help: "Bytes sent by a network's bridge on a host.",
    labels: ['host', 'network'],
  },
  vmlink_network_dropped_total: {
    type: 'counter',
    help: "Packets a network's bridge dropped on a host (both directions).",
    labels: ['host', 'network'],
  },
  vmlink_pool_size_bytes: { type: 'gauge', help: 'Size of a storage pool.', labels: ['host', 'pool'] },
  vmlink_pool_used_bytes: { type: 'gauge', help: 'Used bytes of a storage pool.', labels: ['host', 'pool'] },
  vmlink_pool_utilization: {
    type: 'gauge',
    help: 'Used share of a storage pool (0..1).',
    labels: ['host', 'pool'],
  },
  vmlink_apply_duration_seconds: {
    type: 'histogram',
    help: 'Duration of applies, by outcome.',
    labels: ['outcome'],
  },
  vmlink_verify_duration_seconds: {
    type: 'histogram',
    help: 'Duration of verify runs, by outcome.',
    labels: ['outcome'],
  },
  vmlink_verify_cells: {
    type: 'gauge',
    help: 'Cells of the last verify matrix, by result.',
    labels: ['result'],
  },
  vmlink_collect_duration_seconds: {
    type: 'gauge',
    help: "Duration of the last collection of every agent's sample.",
    labels: [],
  },
  vmlink_alerts: {
    type: 'gauge',
    help: 'Alert instances by rule, state and severity.',
    labels: ['rule', 'state', 'severity'],
  },
  vmlink_backup_objective_ok: {
    type: 'gauge',
    help: "A backup policy's objective for a VM (rpo, rto, rule): 1 met, 0 in drift; absent while undeclared or unknown.",
    labels: ['policy', 'vm', 'objective'],
  },
  vmlink_backup_newest_age_seconds: {
    type: 'gauge',
    help: "Age of a VM's newest good snapshot under a backup policy (absent: none yet).",
    labels: ['policy', 'vm'],
  },
} as const satisfies Record<string, MetricInfo>;
export type MetricName = keyof typeof METRICS;
