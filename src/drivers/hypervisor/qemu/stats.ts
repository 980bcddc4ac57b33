// One VM's resource figures for metrics (docs/observability.md): CPU seconds and resident memory of its QEMU process
// (/proc/<pid>/stat and status), its disks' counters (QMP `query-blockstats`), and which taps its NICs use. Read
// without the VM's lock (a long snapshot must not hold up metrics) and bounded in time: a QEMU that does not answer
// QMP still reports its CPU and memory.
import { QMP_STATUS_TIMEOUT_MS, VM_DISKS_MAX } from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import { type ProcessIdentity, processRssBytes, procStat, USER_HZ } from '../../../shared/process.js';
import type { VmDiskCounters, VmStats } from '../types.js';
import { nicSlot } from './cmdline.js';
import { diskSlotIds, ROOT_DISK_IDS } from './disk-slots.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

/** What reading a VM's figures needs from its driver. */
export interface StatsDeps {
  stored: () => Promise<StoredVm | undefined>;
  /** The VM's live QEMU (pidfile checked against the process), or undefined. */
  live: () => Promise<ProcessIdentity | undefined>;
  qmp: (timeoutMs: number) => Promise<QmpClient>;
}

/** VM `name`'s figures, or undefined when it has no stored config (being created or deleted). */
export async function readVmStats(name: string, d: StatsDeps): Promise<VmStats | undefined> {
  const vm = await d.stored().catch(() => undefined);
  if (!vm) return undefined;
  const nics = vm.config.nics.map((n, i) => ({ nic: nicSlot(vm.nicSlots?.[i] ?? i).device, tap: n.tap }));
  const stopped: VmStats = {
    name,
    running: false,
    cpuSecondsTotal: 0,
    memoryRssBytes: 0,
    memoryConfiguredBytes: vm.config.memoryMiB * 1024 * 1024,
    disks: [],
    nics,
  };
  const qemu = await d.live();
  if (!qemu) return stopped;
  const [stat, rss, disks] = await Promise.all([
    procStat(qemu.pid),
    processRssBytes(qemu.pid),
    blockCounters(name, vm, d),
  ]);
  // The pid must still be this QEMU (same start time) when its figures were read, else they are another process's.
  if (!stat || stat.startTime !== qemu.startTime || rss === undefined) return stopped;
  return {
    ...stopped,
    running: true,
    pid: qemu.pid,
    cpuSecondsTotal: (stat.cpuTicks + stat.childCpuTicks) / USER_HZ,
    memoryRssBytes: rss,
    disks,
  };
}

/** The VM's disks' counters over QMP; none (logged) when QMP does not answer in time. */
async function blockCounters(name: string, vm: StoredVm, d: StatsDeps): Promise<VmDiskCounters[]> {
  try {
    const qmp = await d.qmp(QMP_STATUS_TIMEOUT_MS);
    const reply = await qmp.execute<unknown>('query-blockstats', undefined, QMP_STATUS_TIMEOUT_MS);
    return parseBlockstats(reply, diskNodes(vm));
  } catch (e) {
    log.debug({ vm: name, err: (e as Error).message }, 'metrics: no disk counters (QMP)');
    return [];
  }
}

/** Disk names by their QEMU format node: `root` (a VM booting from a volume) and the spec's disks by slot. */
export function diskNodes(vm: Pick<StoredVm, 'config' | 'diskSlots'>): Map<string, string> {
  const nodes = new Map<string, string>();
  if (vm.config.image.kind !== 'test-guest') nodes.set(ROOT_DISK_IDS.node, 'root');
  vm.config.disks.forEach((disk, i) => {
    nodes.set(diskSlotIds(vm.diskSlots?.[i] ?? i).node, disk.name);
  });
  return nodes;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * Parses QMP `query-blockstats` (untrusted: QEMU runs the guest): the entries whose `node-name` is one of `nodes`,
 * each once, counters that are not non-negative integers read as 0, at most VM_DISKS_MAX + 1 disks.
 */
export function parseBlockstats(reply: unknown, nodes: ReadonlyMap<string, string>): VmDiskCounters[] {
  if (!Array.isArray(reply)) return [];
  const out: VmDiskCounters[] = [];
  const seen = new Set<string>();
  for (const entry of reply.slice(0, 4 * (VM_DISKS_MAX + 4))) {
    if (typeof entry !== 'object' || entry === null) continue;
    const e = entry as { 'node-name'?: unknown; stats?: Record<string, unknown> };
    const disk = typeof e['node-name'] === 'string' ? nodes.get(e['node-name']) : undefined;
    if (disk === undefined || seen.has(disk) || typeof e.stats !== 'object' || e.stats === null) continue;
    seen.add(disk);
    const n = (k: string) => (isCount(e.stats?.[k]) ? (e.stats[k] as number) : 0);
    out.push({
      disk,
      readBytes: n('rd_bytes'),
      writeBytes: n('wr_bytes'),
      readOps: n('rd_operations'),
      writeOps: n('wr_operations'),
    });
  }
  return out;
}
