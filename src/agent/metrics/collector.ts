// One metric sample of this host (`GET /v1/metrics`, docs/observability.md): the host's CPU, memory, filesystems
// and interfaces; per VM its QEMU's figures, disks and NICs (the taps' counters, turned to the guest's view); per
// network its bridge's counters; per pool its filesystem's size and use. Every link's counters come from one
// `ip -json -stats link show` in this agent's namespace. Each part is read side by side; a part that fails is logged
// and left out (the host's CPU and memory excepted: without them there is no sample).
import { statfs } from 'node:fs/promises';
import type { HypervisorDriver, VmStats } from '../../drivers/hypervisor/types.js';
import type { NetworkDriver } from '../../drivers/network/types.js';
import { PoolStateStore } from '../../drivers/storage/pool-state.js';
import { guestView, type LinkCounters, linkStats } from '../../exec/ip-stats.js';
import type { Runner } from '../../exec/runner.js';
import { log } from '../../shared/log.js';
import {
  type AgentMetrics,
  type HostMetrics,
  METRICS_AGENT_TIMEOUT_MS,
  METRICS_DEVICES_PER_VM_MAX,
  METRICS_FILESYSTEMS_MAX,
  METRICS_INTERFACES_MAX,
  METRICS_VMS_MAX,
  type VmMetrics,
} from '../../shared/metrics.js';
import type { NetworkBackend } from '../../shared/model.js';
import { HostFiguresReader, type MetricsScope } from './host.js';

/** What a sample is read from. */
export interface MetricsCollectorDeps {
  host: string;
  scope: MetricsScope;
  runner: Runner;
  /** The agent's state directory (its filesystem is reported; its pool records name the pools). */
  stateDir: string;
  networks: Partial<Record<NetworkBackend, NetworkDriver>>;
  hypervisor: HypervisorDriver;
  /** Epoch ms (tests inject one). */
  now?: () => number;
  /** How long one part may take (default METRICS_PART_TIMEOUT_MS). */
  partTimeoutMs?: number;
}

/** How long one part of a sample may take: the sample must be done before the controller's request times out. */
export const METRICS_PART_TIMEOUT_MS = Math.floor(METRICS_AGENT_TIMEOUT_MS / 2);
/** Longest label value a sample may carry (AgentMetricsSchema). */
const LABEL_MAX = 128;
/** Links read from `ip -json -stats link show`: host interfaces, bridges and every VM's taps. */
const LINKS_MAX = METRICS_INTERFACES_MAX * 2;

/** Takes samples of one host; overlapping requests share the sample being taken. */
export class AgentMetricsCollector {
  private readonly figures: HostFiguresReader;
  private readonly pools: PoolStateStore;
  private inFlight: Promise<AgentMetrics> | undefined;

  constructor(private readonly deps: MetricsCollectorDeps) {
    this.figures = new HostFiguresReader(deps.scope);
    this.pools = new PoolStateStore(deps.stateDir);
  }

  /** A sample now (or the one being taken). */
  sample(): Promise<AgentMetrics> {
    this.inFlight ??= this.take().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async take(): Promise<AgentMetrics> {
    const d = this.deps;
    const ms = d.partTimeoutMs ?? METRICS_PART_TIMEOUT_MS;
    const [vms, links, networks, pools] = await Promise.all([
      part('VMs', [] as VmStats[], async () => (await d.hypervisor.vmStats?.()) ?? [], ms),
      part('interfaces', new Map<string, LinkCounters>(), () => linkStats(d.runner, LINKS_MAX), ms),
      part('networks', [] as Array<{ name: string; bridge: string }>, () => this.bridges(), ms),
      part(
        'pools',
        [] as Array<{ name: string; path: string }>,
        async () => (await this.pools.readAll()).map((r) => ({ name: r.config.name, path: r.config.path })),
        ms,
      ),
    ]);
    const shown = vms.slice(0, METRICS_VMS_MAX);
    const none = new Map<string, { sizeBytes: number; usedBytes: number }>();
    const [figures, filesystems, poolUse] = await Promise.all([
      this.figures.read(shown.flatMap((v) => (v.pid === undefined ? [] : [v.pid]))),
      part(
        'filesystems',
        none,
        () => usage([d.stateDir, ...pools.map((p) => p.path)].slice(0, METRICS_FILESYSTEMS_MAX)),
        ms,
      ),
      part('pools', none, () => usage(pools.map((p) => p.path).slice(0, METRICS_FILESYSTEMS_MAX)), ms),
    ]);
    const hostMetrics: HostMetrics = {
      scope: d.scope,
      ...figures,
      // A path is a label (at most 128 characters): a longer one is left out rather than spoil the sample.
      filesystems: [...filesystems.entries()]
        .filter(([path]) => path.length <= LABEL_MAX)
        .map(([path, u]) => ({ path, ...u })),
      interfaces: [...links.entries()]
        .filter(([name]) => name !== 'lo')
        .slice(0, METRICS_INTERFACES_MAX)
        .map(([name, c]) => ({ name, ...c })),
    };
    return {
      host: d.host,
      // When the sample was done: between the send and the answer of every request it served (clock evidence).
      at: Math.floor((d.now ?? Date.now)()),
      hostMetrics,
      vms: shown.map((v) => vmMetrics(v, links)),
      networks: networks.slice(0, METRICS_INTERFACES_MAX).flatMap((n) => {
        const c = links.get(n.bridge);
        return c ? [{ network: n.name, device: n.bridge, ...c }] : [];
      }),
      pools: pools.flatMap((p) => {
        const u = poolUse.get(p.path);
        return u ? [{ pool: p.name, ...u }] : [];
      }),
    };
  }

  /** Managed networks and their bridges, from every backend. */
  private async bridges(): Promise<Array<{ name: string; bridge: string }>> {
    const lists = await Promise.all(Object.values(this.deps.networks).map((n) => n.listNetworks()));
    return lists
      .flat()
      .map((n) => ({ name: n.name, bridge: n.bridge }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }
}

/** A VM's metrics: its NICs' counters are its taps', seen from the guest; a NIC whose tap is missing is left out. */
function vmMetrics(v: VmStats, links: ReadonlyMap<string, LinkCounters>): VmMetrics {
  return {
    name: v.name,
    running: v.running,
    cpuSecondsTotal: v.cpuSecondsTotal,
    memoryRssBytes: v.memoryRssBytes,
    memoryConfiguredBytes: v.memoryConfiguredBytes,
    disks: v.disks.slice(0, METRICS_DEVICES_PER_VM_MAX),
    nics: v.nics.slice(0, METRICS_DEVICES_PER_VM_MAX).flatMap((n) => {
      const tap = links.get(n.tap);
      return tap ? [{ nic: n.nic, tap: n.tap, ...guestView(tap) }] : [];
    }),
  };
}

/** Size and use of the filesystem holding each path (statfs), by path; a path that cannot be read is left out. */
async function usage(
  paths: readonly string[],
): Promise<Map<string, { sizeBytes: number; usedBytes: number }>> {
  const out = new Map<string, { sizeBytes: number; usedBytes: number }>();
  await Promise.all(
    [...new Set(paths)].map(async (path) => {
      const s = await statfs(path).catch(() => undefined);
      if (s) out.set(path, { sizeBytes: s.blocks * s.bsize, usedBytes: (s.blocks - s.bfree) * s.bsize });
    }),
  );
  // In the order asked (a Map keeps insertion order; the statfs calls finished in any order).
  return new Map(paths.flatMap((p) => (out.has(p) ? [[p, out.get(p)!] as const] : [])));
}

/**
 * One part of a sample; when it fails or takes longer than `METRICS_PART_TIMEOUT_MS` (a hung command or QMP),
 * `empty` (and a log line) rather than no sample at all, or one that never comes.
 */
async function part<T>(what: string, empty: T, read: () => Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
  });
  try {
    return await Promise.race([read(), late]);
  } catch (e) {
    log.warn({ err: (e as Error).message }, `metrics: cannot read the ${what}`);
    return empty;
  } finally {
    clearTimeout(timer);
  }
}
