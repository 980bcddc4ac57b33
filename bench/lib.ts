// Shared helpers of the benchmarks: statistics, host description, cleanup registry, namespaces.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { performance } from 'node:perf_hooks';

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Milliseconds since `t0` (a `performance.now()` value), rounded to 0.1 ms. */
export const since = (t0: number): number => Math.round((performance.now() - t0) * 10) / 10;

/** The number after flag `name` on the command line (`--hosts 1000`); `dflt` when absent or not a number. */
export function numArg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i < 0 ? dflt : Number(process.argv[i + 1]) || dflt;
}

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Milliseconds as seconds with `digits` decimals. */
export const secs = (ms: number, digits = 2): string => `${(ms / 1000).toFixed(digits)} s`;

/** Rounds to `digits` decimals. */
export const round = (x: number, digits = 2): number => Math.round(x * 10 ** digits) / 10 ** digits;

/** One side of a side-by-side comparison: every repeat (ms) and their median. */
export interface SideResult {
  label: string;
  runsMs: number[];
  medianMs: number;
}

/** Builds a SideResult from runs. */
export function side(label: string, runsMs: number[]): SideResult {
  return { label, runsMs: runsMs.map((x) => round(x, 1)), medianMs: round(median(runsMs), 1) };
}

/** What the machine is, for the report. */
export interface HostInfo {
  cpuModel: string;
  cores: number;
  kernel: string;
  accelerator: string;
  qemu: string;
  node: string;
  loadavgAtStart: number[];
}

/** Describes this machine: CPU model from /proc/cpuinfo, core count, kernel, QEMU version. */
export function hostInfo(): HostInfo {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  let qemu = 'unknown';
  try {
    qemu = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  } catch {
    // reported as unknown
  }
  return {
    cpuModel: model,
    cores: cpus().length,
    kernel: release(),
    accelerator: 'tcg (KVM not used: /dev/kvm hangs guests on this machine)',
    qemu,
    node: process.version,
    loadavgAtStart: loadavg().map((x) => round(x, 2)),
  };
}

/** The 1-minute load average now (to judge noise from other work on the machine). */
export const load1 = (): number => round(loadavg()[0]!, 2);

// Cleanup registry: everything a bench creates registers its removal here, so that SIGINT/SIGTERM or a
// crash between try and finally still removes namespaces, processes and temp dirs.
const cleanups = new Map<number, { what: string; fn: () => Promise<void> | void }>();
let nextCleanup = 1;

/** Registers `fn` to run at exit unless the returned function is called first (which runs it now). */
export function onCleanup(what: string, fn: () => Promise<void> | void): () => Promise<void> {
  const id = nextCleanup++;
  cleanups.set(id, { what, fn });
  return async () => {
    if (!cleanups.delete(id)) return;
    await fn();
  };
}

/** Runs every pending cleanup, newest first; errors are printed, not thrown. */
export async function runCleanups(): Promise<void> {
  const pending = [...cleanups.entries()].reverse();
  cleanups.clear();
  for (const [, c] of pending) {
    try {
      await c.fn();
    } catch (e) {
      console.error(`cleanup (${c.what}) failed: ${(e as Error).message}`);
    }
  }
}

/** A fresh namespace name of this bench: `vlbench-<8 hex>`. */
export const benchNsName = (): string => `vlbench-${randomBytes(4).toString('hex')}`;

/** Whether `pid` is alive and not a zombie. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** SIGKILLs `pids` and waits (up to 5 s) until they are gone. */
export async function killAndWait(pids: number[]): Promise<void> {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && pids.some(alive)) await sleep(20);
}

/** Pids of the processes in namespace `ns`. */
export function nsPids(ns: string): number[] {
  try {
    return execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** Kills every process in `ns`, then deletes it (missing is fine). */
export async function deleteNamespace(ns: string): Promise<void> {
  await killAndWait(nsPids(ns));
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

/** Counts of what a namespace holds: bridges, taps, the vmlink nftables table, processes by name. */
export interface NsCensus {
  bridges: number;
  taps: number;
  bridgesWithAddr: number;
  tapsAttached: number;
  nftChains: number;
  nftRules: number;
  dnsmasq: number;
  ipForward: boolean;
}

/** Looks at `ns` (read only) to compare the end states of vmlink and the raw commands. */
export function census(ns: string): NsCensus {
  const ip = (args: string[]) =>
    execFileSync('ip', ['-n', ns, '-json', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const links = JSON.parse(ip(['-details', 'link', 'show'])) as Array<{
    ifname: string;
    master?: string;
    linkinfo?: { info_kind?: string };
  }>;
  const addrs = JSON.parse(ip(['-4', 'addr', 'show'])) as Array<{ ifname: string; addr_info: unknown[] }>;
  const bridges = links.filter((l) => l.linkinfo?.info_kind === 'bridge');
  const bridgeNames = new Set(bridges.map((b) => b.ifname));
  const taps = links.filter((l) => l.linkinfo?.info_kind === 'tun');
  let nft = '';
  try {
    nft = execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'vmlink'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch {
    // no table
  }
  const fwd = execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-n', 'net.ipv4.ip_forward'], {
    encoding: 'utf8',
  }).trim();
  const comms = nsPids(ns).map((p) => {
    try {
      return readFileSync(`/proc/${p}/comm`, 'utf8').trim();
    } catch {
      return '';
    }
  });
  return {
    bridges: bridges.length,
    taps: taps.length,
    bridgesWithAddr: addrs.filter((a) => bridgeNames.has(a.ifname) && a.addr_info.length > 0).length,
    tapsAttached: taps.filter((t) => t.master && bridgeNames.has(t.master)).length,
    nftChains: (nft.match(/^\s*chain /gm) ?? []).length,
    nftRules: (nft.match(/comment "net:/g) ?? []).length,
    dnsmasq: comms.filter((c) => c === 'dnsmasq').length,
    ipForward: fwd === '1',
  };
}
