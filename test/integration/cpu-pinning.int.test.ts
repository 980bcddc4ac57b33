// vCPU pinning, CPU quota and huge pages through QemuDriver against a real QEMU (TCG here): a 2-vCPU VM pinned
// crosswise (vCPU 0 on CPU 1, vCPU 1 on CPU 0) shows it in /proc/<qemu>/task/<vcpu thread>/status, and again after a
// restart (new threads); a quota is honoured or refused exactly as the host's capability report says; huge pages
// (reserved for the test where the host has too few free, given back after) back the guest RAM, seen in smaps;
// and a pin to a CPU the host lacks is refused before QEMU starts. The VM boots no OS (a blank qcow2: SeaBIOS idles),
// so no guest boot is waited for.
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processMatches, QemuDriver } from '../../src/drivers/hypervisor/qemu/driver.js';
import { defaultLauncherPath } from '../../src/drivers/hypervisor/qemu/launcher.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { HostResources, VmConfig } from '../../src/shared/model.js';
import { pollUntil } from '../../src/shared/time.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const runner = new SystemRunner();
const NS = 'vltest-bal';
const BRIDGE = 'vltest-balbr';
const TAP = 'vlt-bal00001';
const VM = 'vltest-bal1';
const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';

const isRoot = process.getuid?.() === 0;

/** `Cpus_allowed_list` of each vCPU thread of QEMU `pid`, by vCPU index (from QEMU's thread names `CPU n/TCG`). */
async function vcpuAffinity(pid: number, threads: Array<{ vcpu: number; thread: number }>) {
  const out: Record<number, string> = {};
  for (const t of threads) {
    const status = await readFile(`/proc/${pid}/task/${t.thread}/status`, 'utf8');
    out[t.vcpu] = /^Cpus_allowed_list:\s*(\S+)$/m.exec(status)![1]!;
  }
  return out;
}

describe.runIf(isRoot)('CPU pinning, quota and huge pages on a real QEMU', () => {
  let release: (() => Promise<void>) | undefined;
  let stateDir = '';
  let driver: QemuDriver;
  let resources: HostResources;
  let cfg: VmConfig;

  beforeAll(async () => {
    if (!existsSync(defaultLauncherPath())) await runner.run(['bash', 'scripts/build-native.sh']);
    release = await acquireVmLock();
    await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
    await runner.run(['ip', 'netns', 'add', NS]);
    for (const line of [
      'link set lo up',
      `link add ${BRIDGE} type bridge`,
      `link set ${BRIDGE} up`,
      `tuntap add dev ${TAP} mode tap vnet_hdr`,
      `link set ${TAP} master ${BRIDGE}`,
      `link set ${TAP} up`,
    ])
      await runner.run(['ip', '-n', NS, ...line.split(' ')]);
    stateDir = await mkdtemp(join(tmpdir(), 'vmlink-bal-int-'));
    await chmod(stateDir, 0o711);
    const base = join(stateDir, 'blank.qcow2');
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '16M']);
    await chmod(base, 0o644);
    driver = new QemuDriver({ runner, stateDir, netns: NS });
    resources = await driver.hostResources();
    cfg = {
      name: VM,
      cpus: 2,
      memoryMiB: 128,
      image: { kind: 'qcow2', path: base, cloudInit: { sshAuthorizedKeys: [] } },
      disks: [],
      nics: [
        { network: 'n', backend: 'linux', bridge: BRIDGE, tap: TAP, mac: '52:54:00:b0:00:01', mtu: 1500 },
      ],
      state: 'running',
      cpu: { pin: [1, 0] },
    };
  });

  afterAll(async () => {
    try {
      if (driver) {
        const pid = (await driver.list().catch(() => [])).find((v) => v.name === VM)?.pid;
        await driver.delete(VM).catch(() => {});
        if (pid && (await processMatches(pid, VM))) process.kill(pid, 'SIGKILL');
        await driver.close();
      }
    } finally {
      await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
      if (stateDir) await rm(stateDir, { recursive: true, force: true });
      await release?.();
    }
  });

  it('the capability report lists the online CPUs and says whether quotas and huge pages are possible', async () => {
    const online = (await readFile('/sys/devices/system/cpu/online', 'utf8')).trim();
    expect(resources.onlineCpus.length).toBeGreaterThanOrEqual(2);
    expect(resources.onlineCpus[0]).toBe(0);
    expect(online.startsWith('0')).toBe(true);
    const meminfo = await readFile('/proc/meminfo', 'utf8');
    const free = Number(/^HugePages_Free:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
    expect(resources.hugepages.free).toBe(free);
    if (!resources.hugepages.available) expect(resources.hugepages.reason).toMatch(/huge/);
    if (!resources.cpuQuota.available) expect(resources.cpuQuota.reason).toMatch(/not a cgroup v2/);
    // The room left for VM disks (a block migration's explain weighs its copies against it): statfs of the VMs' directory.
    const fs = await statfs(stateDir);
    const freeMiB = Math.floor((fs.bavail * fs.bsize) / 1024 / 1024);
    expect(Math.abs(resources.vmDiskFreeMiB! - freeMiB)).toBeLessThan(1024);
  });

  it('pins each vCPU thread to its host CPU, visible in /proc, in the report, and again after a restart', async () => {
    await driver.create(cfg, 'hash-bal1');
    await driver.start(VM);
    const seen = (await driver.list()).find((v) => v.name === VM)!;
    expect(seen.state).toBe('running');
    expect(seen.vcpus?.map((v) => [v.vcpu, v.cpus])).toEqual([
      [0, '1'],
      [1, '0'],
    ]);
    // Read /proc ourselves: each thread is a task of QEMU, its allowed list is the one pinned.
    expect(await vcpuAffinity(seen.pid!, seen.vcpus!)).toEqual({ 0: '1', 1: '0' });
    const firstThreads = seen.vcpus!.map((v) => v.thread);

    await driver.stop(VM, { force: true });
    await driver.start(VM);
    const again = (await driver.list()).find((v) => v.name === VM)!;
    expect(again.vcpus!.map((v) => v.thread)).not.toEqual(firstThreads);
    expect(await vcpuAffinity(again.pid!, again.vcpus!)).toEqual({ 0: '1', 1: '0' });
    await driver.stop(VM, { force: true });
    await driver.delete(VM);
  });

  it('refuses a pin to a CPU the host does not have, before QEMU starts', async () => {
    const missing = Math.max(...resources.onlineCpus) + 1;
    await driver.create({ ...cfg, cpu: { pin: [0, missing] } }, 'hash-bal2');
    await expect(driver.start(VM)).rejects.toThrow(
      new RegExp(`pins vCPUs to host CPU\\(s\\) ${missing}, which host this host does not have online`),
    );
    expect((await driver.list()).find((v) => v.name === VM)?.state).toBe('stopped');
    await driver.delete(VM);
  });

  it('a CPU quota is cpu.max where the host delegates cgroups, refused with the report’s reason where not', async () => {
    await driver.create({ ...cfg, cpu: { quotaPercent: 50 } }, 'hash-bal3');
    if (resources.cpuQuota.available) {
      await driver.start(VM);
      const seen = (await driver.list()).find((v) => v.name === VM)!;
      // 50% of 2 vCPUs: one CPU's worth per 100 ms period.
      expect(seen.cpuMax).toBe('100000 100000');
      await driver.stop(VM, { force: true });
    } else {
      await expect(driver.start(VM)).rejects.toThrow(
        `VM ${VM} asks for a CPU quota (50%) but host this host cannot set one: ${resources.cpuQuota.reason}`,
      );
      expect((await driver.list()).find((v) => v.name === VM)?.state).toBe('stopped');
    }
    await driver.delete(VM);
  });

  it('backs the guest RAM with huge pages where they can be had, refused with the reason where not', async () => {
    const pageKiB = resources.hugepages.pageSizeKiB;
    const need = pageKiB ? Math.ceil((cfg.memoryMiB * 1024) / pageKiB) : 0;
    const freePages = async () =>
      Number(/^HugePages_Free:\s+(\d+)/m.exec(await readFile('/proc/meminfo', 'utf8'))?.[1] ?? 0);
    // Too few free: reserve what the VM needs for this test (the pool is given back below); a kernel that cannot
    // (no hugetlb, memory too fragmented) leaves the refusal to be checked instead.
    const old = pageKiB ? (await readFile(NR_HUGEPAGES, 'utf8')).trim() : undefined;
    if (old !== undefined && (await freePages()) < need)
      await writeFile(NR_HUGEPAGES, String(Number(old) + need)).catch(() => {});
    try {
      await driver.create({ ...cfg, cpu: undefined, hugepages: true } as VmConfig, 'hash-bal4');
      const before = await freePages();
      if (before < need) {
        await expect(driver.start(VM)).rejects.toThrow(
          /wants its 128 MiB on huge pages but host this host cannot give them/,
        );
        expect((await driver.list()).find((v) => v.name === VM)?.state).toBe('stopped');
        return;
      }
      await driver.start(VM);
      const pid = (await driver.list()).find((v) => v.name === VM)!.pid!;
      // QEMU's RAM is one hugetlb memfd mapping of the VM's size, preallocated: the pages are taken at start.
      const smaps = await readFile(`/proc/${pid}/smaps`, 'utf8');
      const ram = smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/).find((m) => /\/memfd:/.test(m.split('\n')[0]!));
      expect(ram, 'a memfd mapping of the guest RAM').toBeDefined();
      expect(ram).toMatch(new RegExp(`^Size:\\s+${cfg.memoryMiB * 1024} kB$`, 'm'));
      expect(ram).toMatch(new RegExp(`^KernelPageSize:\\s+${pageKiB} kB$`, 'm'));
      expect(before - (await freePages())).toBeGreaterThanOrEqual(need);
      console.log(`huge pages: QEMU ${pid} holds ${need} pages of ${pageKiB} KiB (${ram!.split('\n')[0]})`);
      await driver.stop(VM, { force: true });
      // The pages come back once the kernel has torn down QEMU's memory, which may end a moment after stop returns.
      const back =
        (await pollUntil(async () => (await freePages()) === before, {
          timeoutMs: 15_000,
          intervalMs: 100,
        })) ?? false;
      expect(back, `free huge pages ${await freePages()} after the stop, ${before} before the start`).toBe(
        true,
      );
    } finally {
      await driver.delete(VM).catch(() => {});
      if (old !== undefined) await writeFile(NR_HUGEPAGES, old).catch(() => {});
    }
  });
});
