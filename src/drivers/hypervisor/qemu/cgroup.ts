// A cgroup v2 per VM where the host has the unified hierarchy: memory, pids and CPU limits for one QEMU. On a
// hybrid or v1 host (this development machine) there is none, and the agent's capability report says so.
import { mkdir, readFile, rmdir, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { VmlinkError } from '../../../shared/errors.js';
import { cpuMaxValue } from './cpu-pinning.js';

/** Where the unified hierarchy is mounted on a cgroup v2 host. */
export const CGROUP_ROOT = '/sys/fs/cgroup';
/** The cgroup (below the root) that holds one child per VM. */
export const VM_CGROUP_PARENT = 'vmlink-vms';
/** statfs f_type of cgroup2 (CGROUP2_SUPER_MAGIC). */
const CGROUP2_MAGIC = 0x63677270;
/** QEMU's own memory beside the guest's RAM (device models, caches), allowed on top of memory.max. */
export const QEMU_MEMORY_OVERHEAD_MIB = 256;
/** Controllers a VM cgroup uses. */
const CONTROLLERS = ['cpu', 'memory', 'pids'] as const;

/** What a VM's cgroup limits. */
export interface VmCgroupLimits {
  memoryMiB: number;
  cpus: number;
  /** Tasks (QEMU threads) at most. */
  pids: number;
  /** `vms[].cpu.quota`: this percent of the vCPUs' time (default 100). */
  quotaPercent?: number;
}

/** Whether `root` is a cgroup v2 (unified) mount: only there does the agent create per-VM cgroups. */
export async function isCgroupV2(root = CGROUP_ROOT): Promise<boolean> {
  const st = await statfs(root).catch(() => undefined);
  return st !== undefined && Number(st.type) === CGROUP2_MAGIC;
}

/** The files (relative to the VM's cgroup) and values that enforce `limits`. */
export function cgroupLimitFiles(limits: VmCgroupLimits): Array<[string, string]> {
  const memory = (limits.memoryMiB + QEMU_MEMORY_OVERHEAD_MIB) * 1024 * 1024;
  return [
    ['memory.max', String(memory)],
    ['memory.swap.max', '0'],
    ['pids.max', String(limits.pids)],
    // One vCPU is one CPU's worth of time per 100 ms period (less with a quota); QEMU's I/O threads share it.
    ['cpu.max', cpuMaxValue(limits.cpus, limits.quotaPercent)],
  ];
}

/** Path of VM `name`'s cgroup under `root`. */
export function vmCgroupPath(name: string, root = CGROUP_ROOT): string {
  return join(root, VM_CGROUP_PARENT, `vm-${name}`);
}

/** Enables `want` in `dir`'s cgroup.subtree_control, those that its cgroup.controllers offers. */
async function delegate(dir: string, want: readonly string[]): Promise<string[]> {
  const offered = (await readFile(join(dir, 'cgroup.controllers'), 'utf8')).trim().split(/\s+/);
  const on = want.filter((c) => offered.includes(c));
  if (on.length > 0) await writeFile(join(dir, 'cgroup.subtree_control'), on.map((c) => `+${c}`).join(' '));
  return on;
}

/**
 * Creates (or updates) VM `name`'s cgroup under `root` with `limits` and returns its path; the launcher moves QEMU
 * into it before exec. A limit whose controller the host does not offer is left out (its file is absent).
 */
export async function prepareVmCgroup(
  name: string,
  limits: VmCgroupLimits,
  root = CGROUP_ROOT,
): Promise<string> {
  const parent = join(root, VM_CGROUP_PARENT);
  const dir = vmCgroupPath(name, root);
  try {
    await delegate(root, CONTROLLERS);
    await mkdir(parent, { recursive: true });
    const on = await delegate(parent, CONTROLLERS);
    await mkdir(dir, { recursive: true });
    for (const [file, value] of cgroupLimitFiles(limits)) {
      if (!on.includes(file.split('.')[0]!)) continue;
      await writeFile(join(dir, file), value).catch((e: NodeJS.ErrnoException) => {
        // memory.swap.max is absent without swap accounting: the other limits still hold.
        if (e.code !== 'ENOENT') throw e;
      });
    }
  } catch (e) {
    throw new VmlinkError('exec', `cannot set up cgroup ${dir}: ${(e as Error).message}`, {
      subject: `vm/${name}`,
      cause: e,
    });
  }
  return dir;
}

/** Removes VM `name`'s cgroup once its QEMU is gone (an empty cgroup is removed with rmdir; missing is fine). */
export async function removeVmCgroup(name: string, root = CGROUP_ROOT): Promise<void> {
  await rmdir(vmCgroupPath(name, root)).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
}
