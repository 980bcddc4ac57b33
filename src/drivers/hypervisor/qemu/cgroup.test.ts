import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  cgroupLimitFiles,
  isCgroupV2,
  prepareVmCgroup,
  removeVmCgroup,
  VM_CGROUP_PARENT,
  vmCgroupPath,
} from './cgroup.js';

// This development host mounts cgroup v1 (hybrid), so the v2 path runs here against a directory laid out like
// cgroupfs (the kernel would create cgroup.controllers in each new cgroup; the test writes it). A stock Debian 12
// host runs the same code against /sys/fs/cgroup.

describe('cgroupLimitFiles', () => {
  it('limits memory to the guest RAM plus QEMU overhead, no swap, the task count and one CPU per vCPU', () => {
    expect(cgroupLimitFiles({ memoryMiB: 512, cpus: 2, pids: 1024 })).toEqual([
      ['memory.max', String((512 + 256) * 1024 * 1024)],
      ['memory.swap.max', '0'],
      ['pids.max', '1024'],
      ['cpu.max', '200000 100000'],
    ]);
  });
});

describe('per-VM cgroup (v2 layout)', () => {
  let root = '';
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'vmlink-cgroup-'));
    await writeFile(join(root, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
    await writeFile(join(root, 'cgroup.subtree_control'), '');
    await mkdir(join(root, VM_CGROUP_PARENT));
    // This host offers no cpu controller below the root: its limit must be left out.
    await writeFile(join(root, VM_CGROUP_PARENT, 'cgroup.controllers'), 'memory pids\n');
    await writeFile(join(root, VM_CGROUP_PARENT, 'cgroup.subtree_control'), '');
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('delegates the controllers, creates the VM cgroup and writes its limits', async () => {
    const dir = await prepareVmCgroup('web1', { memoryMiB: 128, cpus: 1, pids: 512 }, root);
    expect(dir).toBe(vmCgroupPath('web1', root));
    expect(await readFile(join(root, 'cgroup.subtree_control'), 'utf8')).toBe('+cpu +memory +pids');
    expect(await readFile(join(root, VM_CGROUP_PARENT, 'cgroup.subtree_control'), 'utf8')).toBe(
      '+memory +pids',
    );
    expect(await readFile(join(dir, 'memory.max'), 'utf8')).toBe(String(384 * 1024 * 1024));
    expect(await readFile(join(dir, 'pids.max'), 'utf8')).toBe('512');
    await expect(readFile(join(dir, 'cpu.max'), 'utf8')).rejects.toThrow(/ENOENT/);
  });

  it('names the cgroup in its error when the host refuses', async () => {
    await rm(join(root, 'cgroup.controllers'));
    await expect(prepareVmCgroup('web1', { memoryMiB: 1, cpus: 1, pids: 16 }, root)).rejects.toThrow(
      `cannot set up cgroup ${vmCgroupPath('web1', root)}`,
    );
  });

  it('removes an empty VM cgroup; a missing one is fine', async () => {
    await mkdir(vmCgroupPath('web1', root));
    await removeVmCgroup('web1', root);
    await removeVmCgroup('web1', root);
  });

  it('tells a v2 mount from anything else', async () => {
    expect(await isCgroupV2(root)).toBe(false); // a plain directory
    expect(await isCgroupV2(join(root, 'missing'))).toBe(false);
  });
});
