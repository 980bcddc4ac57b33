// Pinning, quota and huge-page checks over fixture /proc and /sys trees: the capability probe, the refusals, the
// thread ids QEMU names (only its own threads are used), taskset's argv, and cpu.max values.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../../exec/runner.js';
import { parseCpuList, tasksetArgv } from '../../../exec/taskset.js';
import type { HostResources, VmConfig } from '../../../shared/model.js';
import {
  checkVmResources,
  cpuMaxValue,
  cpusAllowedList,
  pinVcpus,
  probeHostResources,
  vcpuThreads,
} from './cpu-pinning.js';

let root = '';
const roots = () => ({ sys: join(root, 'sys'), proc: join(root, 'proc') });

async function put(path: string, text: string) {
  await mkdir(join(root, path, '..'), { recursive: true });
  await writeFile(join(root, path), text);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'vmlink-pin-'));
  await put('sys/devices/system/cpu/online', '0-3,6\n');
  await put('proc/meminfo', 'MemTotal: 1 kB\nHugepagesize:       2048 kB\n');
  await put('sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages', '100\n');
  await put('proc/4242/task/4243/status', 'Name:\tCPU 0/TCG\nCpus_allowed_list:\t2\n');
  await put('proc/4242/task/4244/status', 'Name:\tCPU 1/TCG\nCpus_allowed_list:\t0-3\n');
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const vm = (over: Partial<VmConfig>): VmConfig => ({
  name: 'web',
  cpus: 2,
  memoryMiB: 128,
  image: { kind: 'test-guest' },
  disks: [],
  nics: [],
  state: 'running',
  ...over,
});

describe('probeHostResources', () => {
  it('reads online CPUs and free huge pages (no hugetlbfs mount needed); quotas follow cgroup v2', async () => {
    const r = await probeHostResources(undefined, '/sys/fs/cgroup', roots());
    expect(r.onlineCpus).toEqual([0, 1, 2, 3, 6]);
    expect(r.hugepages).toEqual({
      available: true,
      reason: '100 free 2 MiB huge pages',
      pageSizeKiB: 2048,
      free: 100,
    });
    expect(r.cpuQuota.available).toBe(false);
    expect(r.cpuQuota.reason).toMatch(/^\/sys\/fs\/cgroup is not a cgroup v2 \(unified\) hierarchy/);
    expect((await probeHostResources('/sys/fs/cgroup', '/sys/fs/cgroup', roots())).cpuQuota.available).toBe(
      true,
    );
  });
});

describe('checkVmResources', () => {
  const host: HostResources = {
    onlineCpus: [0, 1],
    cpuQuota: { available: false, reason: 'no cgroup v2' },
    hugepages: { available: true, reason: 'ok', pageSizeKiB: 2048, free: 10 },
  };
  it('passes what the host can do', () => {
    expect(() => checkVmResources(vm({ cpu: { pin: [1, 0] } }), host, 'h1')).not.toThrow();
  });
  it('refuses a CPU the host lacks, a quota without cgroup v2, too few huge pages; each names the fix', () => {
    expect(() => checkVmResources(vm({ cpu: { pin: [0, 5] } }), host, 'h1')).toThrow(
      'VM web pins vCPUs to host CPU(s) 5, which host h1 does not have online (online: 0,1); change vms[].cpu.pin',
    );
    expect(() => checkVmResources(vm({ cpu: { quotaPercent: 50 } }), host, 'h1')).toThrow(
      'VM web asks for a CPU quota (50%) but host h1 cannot set one: no cgroup v2; remove vms[].cpu.quota or fix the host',
    );
    expect(() => checkVmResources(vm({ hugepages: true }), host, 'h1')).toThrow(
      'VM web wants its 128 MiB on huge pages but host h1 cannot give them: 10 free, 64 needed; reserve huge pages or remove vms[].memory.hugepages',
    );
  });
});

describe('vCPU threads and pinning', () => {
  it('uses only threads of QEMU’s own process, in vCPU order', async () => {
    const answer = [
      { 'cpu-index': 1, 'thread-id': 4244 },
      { 'cpu-index': 0, 'thread-id': 4243 },
    ];
    expect(await vcpuThreads(answer, 4242, 'web', roots())).toEqual([
      { vcpu: 0, thread: 4243 },
      { vcpu: 1, thread: 4244 },
    ]);
    // A thread id of another process (or made up) is refused.
    await expect(vcpuThreads([{ 'cpu-index': 0, 'thread-id': 1 }], 4242, 'web', roots())).rejects.toThrow(
      "VM web: vCPU 0's thread 1 is not a thread of QEMU (pid 4242)",
    );
    await expect(vcpuThreads({ nope: 1 }, 4242, 'web', roots())).rejects.toThrow(/no list of vCPUs/);
    await expect(vcpuThreads([{ 'cpu-index': -1, 'thread-id': 4243 }], 4242, 'web', roots())).rejects.toThrow(
      /malformed/,
    );
  });

  it('runs taskset per vCPU thread and reads the affinity back', async () => {
    const runner = new RecordingRunner();
    const threads = [
      { vcpu: 0, thread: 4243 },
      { vcpu: 1, thread: 4244 },
    ];
    const seen = await pinVcpus(runner, 'web', [2, 3], threads, 4242, roots());
    expect(runner.calls.map((c) => c.argv)).toEqual([
      ['taskset', '-pc', '2', '4243'],
      ['taskset', '-pc', '3', '4244'],
    ]);
    expect(seen).toEqual([
      { vcpu: 0, thread: 4243, cpus: '2' },
      { vcpu: 1, thread: 4244, cpus: '0-3' },
    ]);
    await expect(pinVcpus(runner, 'web', [2], threads, 4242, roots())).rejects.toThrow(
      /2 vCPU thread\(s\) but cpu.pin lists 1/,
    );
  });

  it('parses CPU lists and builds argv; refuses what taskset could misread', () => {
    expect(parseCpuList('0-2,5,7-8\n')).toEqual([0, 1, 2, 5, 7, 8]);
    expect(() => parseCpuList('0-a')).toThrow(/invalid CPU list/);
    expect(() => parseCpuList('3-1')).toThrow(/invalid CPU range/);
    expect(tasksetArgv(99, [0, 1])).toEqual(['taskset', '-pc', '0,1', '99']);
    expect(() => tasksetArgv(0, [1])).toThrow(/invalid thread id/);
    expect(() => tasksetArgv(5, [])).toThrow(/no CPU/);
    expect(cpusAllowedList('x\nCpus_allowed_list:\t0-3,5\n')).toBe('0-3,5');
  });

  it('cpu.max: a quota is a share of the vCPUs’ time per 100 ms', () => {
    expect(cpuMaxValue(2, undefined)).toBe('200000 100000');
    expect(cpuMaxValue(2, 50)).toBe('100000 100000');
    expect(cpuMaxValue(1, 1)).toBe('1000 100000');
  });
});
