// A host's own CPU and memory figures (docs/observability.md, `host.scope`): the whole machine from /proc/stat and
// /proc/meminfo, or, in a lab where hosts share one kernel, the sum over the host's own processes: those in the
// agent's network namespace (the agent, its dnsmasq, OVS and helper processes) and its VMs' QEMU processes (which
// run in namespaces of their own).
import { readdir } from 'node:fs/promises';
import { cpus as osCpus } from 'node:os';
import { BadResponseError } from '../../shared/errors.js';
import { isPid, netnsOf, processRssBytes, procStat, USER_HZ } from '../../shared/process.js';
import { mapLimited } from '../../shared/queue.js';
import { readFileCapped } from '../../shared/state-file.js';
import { ProcessCpuLedger } from './ledger.js';

/** What `host.scope` says the figures cover. */
export type MetricsScope = 'machine' | 'processes';

/** CPU and memory of a host at one instant. */
export interface HostFigures {
  cpus: number;
  cpuSecondsTotal: number;
  memoryTotalBytes: number;
  memoryUsedBytes: number;
}

/** Most bytes of /proc/stat read (a line per CPU and the interrupt counts: large machines reach tens of KiB). */
const PROC_STAT_MAX_BYTES = 1024 * 1024;
const MEMINFO_MAX_BYTES = 64 * 1024;
/** /proc entries looked at side by side during a scan. */
const SCAN_CONCURRENCY = 32;

/**
 * Parses /proc/stat: busy ticks (user, nice, system, irq, softirq, steal; guest time is already in user and nice)
 * of the `cpu` line, and the number of `cpuN` lines.
 */
export function parseProcStatCpu(text: string): { busyTicks: number; cpus: number } {
  const lines = text.split('\n');
  const total = lines.find((l) => l.startsWith('cpu '));
  const f = total?.trim().split(/\s+/).slice(1).map(Number);
  if (!f || f.length < 8 || f.slice(0, 8).some((n) => !Number.isSafeInteger(n) || n < 0))
    throw new BadResponseError('/proc/stat has no well-formed cpu line', '/proc/stat');
  const [user, nice, system, , , irq, softirq, steal] = f as [number, ...number[]];
  const cpus = lines.filter((l) => /^cpu\d+ /.test(l)).length;
  return { busyTicks: user + nice! + system! + irq! + softirq! + steal!, cpus: Math.max(1, cpus) };
}

/** Parses /proc/meminfo: MemTotal and MemAvailable in bytes. */
export function parseMeminfo(text: string): { totalBytes: number; availableBytes: number } {
  const kib = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d{1,15}) kB$`, 'm').exec(text);
    if (!m) throw new BadResponseError(`/proc/meminfo has no ${key}`, '/proc/meminfo');
    return Number(m[1]) * 1024;
  };
  return { totalBytes: kib('MemTotal'), availableBytes: kib('MemAvailable') };
}

async function readProcFile(path: string, maxBytes: number): Promise<string> {
  const text = await readFileCapped(path, { maxBytes });
  if (text === undefined) throw new BadResponseError(`${path} is missing`, path);
  return text;
}

/** The machine's memory (MemTotal, and MemTotal - MemAvailable as used). */
async function machineMemory(): Promise<{ totalBytes: number; usedBytes: number }> {
  const m = parseMeminfo(await readProcFile('/proc/meminfo', MEMINFO_MAX_BYTES));
  return { totalBytes: m.totalBytes, usedBytes: Math.max(0, m.totalBytes - m.availableBytes) };
}

/** Reads a host's figures in one scope; `processes` keeps a ledger between samples (see ledger.ts). */
export class HostFiguresReader {
  private readonly ledger = new ProcessCpuLedger();
  private ownNetns: Promise<string | undefined> | undefined;

  /** `netns`: the namespace whose processes are the host's (`net:[INODE]`; default this process's own). */
  constructor(
    readonly scope: MetricsScope,
    private readonly netns: () => Promise<string | undefined> = () => netnsOf('self'),
  ) {}

  /** The figures now; `qemuPids`: the host's running QEMU processes (counted in the `processes` scope). */
  async read(qemuPids: readonly number[]): Promise<HostFigures> {
    const [stat, memory] = await Promise.all([
      readProcFile('/proc/stat', PROC_STAT_MAX_BYTES).then(parseProcStatCpu),
      machineMemory(),
    ]);
    const cpus = stat.cpus || osCpus().length;
    if (this.scope === 'machine')
      return {
        cpus,
        cpuSecondsTotal: stat.busyTicks / USER_HZ,
        memoryTotalBytes: memory.totalBytes,
        memoryUsedBytes: memory.usedBytes,
      };
    const own = await this.processes(qemuPids);
    return {
      cpus,
      cpuSecondsTotal: own.cpuTicks / USER_HZ,
      memoryTotalBytes: memory.totalBytes,
      memoryUsedBytes: own.rssBytes,
    };
  }

  /** The host's own processes: those in the agent's network namespace, and `extra` (its QEMU processes). */
  private async processes(extra: readonly number[]): Promise<{ cpuTicks: number; rssBytes: number }> {
    this.ownNetns ??= this.netns();
    const own = await this.ownNetns;
    if (own === undefined) throw new BadResponseError("cannot read this agent's network namespace", 'netns');
    const wanted = new Set(extra);
    const pids = (await readdir('/proc')).map(Number).filter(isPid);
    const member = await mapLimited(
      pids,
      SCAN_CONCURRENCY,
      async (pid) => wanted.has(pid) || (await netnsOf(pid)) === own,
    );
    const seen = await mapLimited(
      pids.filter((_, i) => member[i]),
      SCAN_CONCURRENCY,
      async (pid) => {
        const [stat, rss] = await Promise.all([procStat(pid), processRssBytes(pid)]);
        return stat && rss !== undefined ? { stat, rss } : undefined;
      },
    );
    const live = seen.filter((s) => s !== undefined);
    const cpuTicks = this.ledger.update(
      live.map(({ stat }) => ({
        pid: stat.pid,
        startTime: stat.startTime,
        ppid: stat.ppid,
        ticks: stat.cpuTicks + stat.childCpuTicks,
      })),
    );
    return { cpuTicks, rssBytes: live.reduce((sum, s) => sum + s.rss, 0) };
  }
}
