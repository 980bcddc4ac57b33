// vCPU pinning, CPU quotas and huge pages of one VM (`vms[].cpu`, `vms[].memory.hugepages`; docs/mobility.md).
// Pinning: QEMU names each vCPU's thread (`query-cpus-fast`); a thread id from QEMU is untrusted, so it is used only
// when /proc/<qemu pid>/task/<tid> exists (a thread of that very process), then its affinity is set with taskset
// through the exec layer. It is set on every start (a restarted QEMU has new threads) and read back from
// /proc/<pid>/task/<tid>/status (`Cpus_allowed_list`) for the host report. Quotas are the VM cgroup's `cpu.max`
// (cgroup.ts), so they exist only where the host has a cgroup v2 hierarchy vmlink may write; huge pages need free
// pages of the default size (a hugetlb memfd: no mount). Where the host lacks one, the VM is refused before it
// starts, with the capability report's reason.
import { constants } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import type { Runner } from '../../../exec/runner.js';
import { parseCpuList, setThreadAffinity } from '../../../exec/taskset.js';
import { InvalidStateError, UnsupportedError } from '../../../shared/errors.js';
import type { HostResources, ObservedVcpu, VmConfig } from '../../../shared/model.js';

/** Most bytes read of one /proc status or sysfs file. */
const PROC_READ_MAX = 64 * 1024;

/** Where the kernel lists online CPUs and huge-page counts, and where mounts are listed (tests use fixtures). */
export interface ResourceRoots {
  sys: string;
  proc: string;
}
const ROOTS: ResourceRoots = { sys: '/sys', proc: '/proc' };

/** At most PROC_READ_MAX bytes of a kernel file, never through a link; undefined when it cannot be read. */
async function readSmall(path: string): Promise<string | undefined> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
  if (!fh) return undefined;
  try {
    const buf = Buffer.alloc(PROC_READ_MAX);
    const { bytesRead } = await fh.read(buf, 0, PROC_READ_MAX, 0);
    return buf.subarray(0, bytesRead).toString('utf8');
  } catch {
    return undefined;
  } finally {
    await fh.close();
  }
}

/** The `Hugepagesize:` of /proc/meminfo in KiB (0 when absent). */
function hugePageSizeKiB(meminfo: string): number {
  const m = /^Hugepagesize:\s+(\d+)\s+kB$/m.exec(meminfo);
  return m ? Number(m[1]) : 0;
}

/** What this host offers for pinning, quotas and huge pages (the capability report's `resources`). */
export async function probeHostResources(
  cgroupRoot: string | undefined,
  cgroupMount: string,
  roots: ResourceRoots = ROOTS,
): Promise<HostResources> {
  const online = await readSmall(`${roots.sys}/devices/system/cpu/online`);
  const meminfo = (await readSmall(`${roots.proc}/meminfo`)) ?? '';
  const size = hugePageSizeKiB(meminfo);
  const freeText = size
    ? await readSmall(`${roots.sys}/kernel/mm/hugepages/hugepages-${size}kB/free_hugepages`)
    : undefined;
  const free = freeText === undefined ? 0 : Number.parseInt(freeText, 10) || 0;
  const hugeReason = !size
    ? 'the kernel reports no huge page size (no hugetlb support)'
    : !free
      ? `no free ${size / 1024} MiB huge pages (vm.nr_hugepages is 0 or all are in use): reserve some, e.g. sysctl vm.nr_hugepages=N`
      : `${free} free ${size / 1024} MiB huge pages`;
  return {
    onlineCpus: online ? parseCpuList(online) : [],
    cpuQuota: cgroupRoot
      ? { available: true, reason: `per-VM cgroups under ${cgroupRoot} (cgroup v2): cpu.max` }
      : {
          available: false,
          reason: `${cgroupMount} is not a cgroup v2 (unified) hierarchy, so vmlink has no cgroup to set cpu.max in; boot the host with the unified hierarchy (systemd.unified_cgroup_hierarchy=1)`,
        },
    hugepages: {
      available: size > 0 && free > 0,
      reason: hugeReason,
      pageSizeKiB: size,
      free,
    },
  };
}

/**
 * Refuses `cfg` on a host that cannot honour its `cpu` or `hugepages` (before anything starts), naming what is
 * missing: a pinned CPU the host does not have online, a quota without cgroup v2, too few free huge pages.
 */
export function checkVmResources(cfg: VmConfig, host: HostResources, hostName: string): void {
  const pin = cfg.cpu?.pin;
  if (pin) {
    const online = new Set(host.onlineCpus);
    const missing = pin.filter((c) => !online.has(c));
    if (missing.length)
      throw new InvalidStateError(
        `VM ${cfg.name} pins vCPUs to host CPU(s) ${missing.join(', ')}, which host ${hostName} does not have online (online: ${host.onlineCpus.join(',') || 'unknown'}); change vms[].cpu.pin`,
        `vm/${cfg.name}`,
      );
  }
  if (cfg.cpu?.quotaPercent !== undefined && !host.cpuQuota.available)
    throw new UnsupportedError(
      `VM ${cfg.name} asks for a CPU quota (${cfg.cpu.quotaPercent}%) but host ${hostName} cannot set one: ${host.cpuQuota.reason}; remove vms[].cpu.quota or fix the host`,
      `vm/${cfg.name}`,
    );
  if (cfg.hugepages) {
    const h = host.hugepages;
    const need = h.pageSizeKiB ? Math.ceil((cfg.memoryMiB * 1024) / h.pageSizeKiB) : 0;
    if (!h.available || h.free < need)
      throw new UnsupportedError(
        `VM ${cfg.name} wants its ${cfg.memoryMiB} MiB on huge pages but host ${hostName} cannot give them: ${h.available ? `${h.free} free, ${need} needed` : h.reason}; reserve huge pages or remove vms[].memory.hugepages`,
        `vm/${cfg.name}`,
      );
  }
}

/** QEMU's answer to `query-cpus-fast`, as far as pinning reads it. */
interface CpuInfoFast {
  'cpu-index': number;
  'thread-id': number;
}

/**
 * The vCPU threads of QEMU process `pid` from a `query-cpus-fast` answer: each entry checked (numbers in range, the
 * thread a task of `pid`), in vCPU order. Throws when QEMU names a thread that is not its own.
 */
export async function vcpuThreads(
  answer: unknown,
  pid: number,
  vm: string,
  roots: ResourceRoots = ROOTS,
): Promise<Array<{ vcpu: number; thread: number }>> {
  if (!Array.isArray(answer) || answer.length > 4096)
    throw new InvalidStateError(`VM ${vm}: query-cpus-fast gave no list of vCPUs`, `vm/${vm}`);
  const out: Array<{ vcpu: number; thread: number }> = [];
  for (const e of answer as CpuInfoFast[]) {
    const vcpu = e?.['cpu-index'];
    const thread = e?.['thread-id'];
    if (!Number.isInteger(vcpu) || vcpu < 0 || !Number.isInteger(thread) || thread < 1)
      throw new InvalidStateError(`VM ${vm}: query-cpus-fast gave a malformed vCPU entry`, `vm/${vm}`);
    // A thread id from QEMU is used only when it is a task of QEMU's own process.
    const status = await readSmall(`${roots.proc}/${pid}/task/${thread}/status`);
    if (status === undefined)
      throw new InvalidStateError(
        `VM ${vm}: vCPU ${vcpu}'s thread ${thread} is not a thread of QEMU (pid ${pid})`,
        `vm/${vm}`,
      );
    out.push({ vcpu, thread });
  }
  return out.sort((a, b) => a.vcpu - b.vcpu);
}

/** `Cpus_allowed_list` of a /proc status text. */
export function cpusAllowedList(status: string): string | undefined {
  return /^Cpus_allowed_list:\s*([\d,-]{1,256})$/m.exec(status)?.[1];
}

/** Where each vCPU thread may run now (from /proc), for the host report. */
export async function observeVcpus(
  threads: ReadonlyArray<{ vcpu: number; thread: number }>,
  pid: number,
  roots: ResourceRoots = ROOTS,
): Promise<ObservedVcpu[]> {
  const out: ObservedVcpu[] = [];
  for (const t of threads) {
    const status = await readSmall(`${roots.proc}/${pid}/task/${t.thread}/status`);
    const cpus = status ? cpusAllowedList(status) : undefined;
    if (cpus !== undefined) out.push({ ...t, cpus });
  }
  return out;
}

/** Pins vCPU i's thread to host CPU `pin[i]` (taskset through `runner`) and reads the result back. */
export async function pinVcpus(
  runner: Runner,
  vm: string,
  pin: readonly number[],
  threads: ReadonlyArray<{ vcpu: number; thread: number }>,
  pid: number,
  roots: ResourceRoots = ROOTS,
): Promise<ObservedVcpu[]> {
  if (threads.length !== pin.length)
    throw new InvalidStateError(
      `VM ${vm} has ${threads.length} vCPU thread(s) but cpu.pin lists ${pin.length}`,
      `vm/${vm}`,
    );
  for (const t of threads) await setThreadAffinity(runner, t.thread, [pin[t.vcpu]!]);
  return observeVcpus(threads, pid, roots);
}

/** A VM cgroup's `cpu.max` value for `quotaPercent` of `cpus` vCPUs (100 ms period). */
export function cpuMaxValue(cpus: number, quotaPercent: number | undefined): string {
  const period = 100_000;
  return `${Math.max(1000, Math.round((cpus * period * (quotaPercent ?? 100)) / 100))} ${period}`;
}

/** Reads a VM cgroup's `cpu.max` (undefined when it has none). */
export async function readCpuMax(cgroupDir: string): Promise<string | undefined> {
  const text = await readFile(`${cgroupDir}/cpu.max`, 'utf8').catch(() => undefined);
  return text?.trim().slice(0, 64);
}

/** QEMU's vCPU threads of running VM `vm` (`query-cpus-fast`, each checked to be a thread of `pid`). */
export async function queryVcpuThreads(
  qmp: { execute<T>(command: string): Promise<T> },
  pid: number,
  vm: string,
  roots: ResourceRoots = ROOTS,
): Promise<Array<{ vcpu: number; thread: number }>> {
  return vcpuThreads(await qmp.execute<unknown>('query-cpus-fast'), pid, vm, roots);
}

/** What the report shows of a running VM's pinning and quota (absent parts: not asked for or not readable). */
export async function observeVmCpu(
  cfg: VmConfig,
  pid: number,
  qmp: () => Promise<{ execute<T>(command: string): Promise<T> }>,
  cgroupDir: string | undefined,
): Promise<{ vcpus?: ObservedVcpu[]; cpuMax?: string }> {
  const out: { vcpus?: ObservedVcpu[]; cpuMax?: string } = {};
  if (cfg.cpu?.pin) out.vcpus = await observeVcpus(await queryVcpuThreads(await qmp(), pid, cfg.name), pid);
  if (cfg.cpu?.quotaPercent !== undefined && cgroupDir) {
    const max = await readCpuMax(cgroupDir);
    if (max !== undefined) out.cpuMax = max;
  }
  return out;
}

/** Pins a just-started VM's vCPUs as `cfg.cpu.pin` says (nothing to do without a pin list). */
export async function pinStartedVm(
  runner: Runner,
  cfg: VmConfig,
  pid: number,
  qmp: () => Promise<{ execute<T>(command: string): Promise<T> }>,
): Promise<void> {
  const pin = cfg.cpu?.pin;
  if (!pin) return;
  const threads = await queryVcpuThreads(await qmp(), pid, cfg.name);
  await pinVcpus(runner, cfg.name, pin, threads, pid);
}
