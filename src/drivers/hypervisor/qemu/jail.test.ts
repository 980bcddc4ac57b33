import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { VmConfig } from '../../../shared/model.js';
import { VM_CGROUP_PARENT, vmCgroupPath } from './cgroup.js';
import { vmPaths } from './cmdline.js';
import { jailSpec, vmLaunchArgv } from './jail.js';
import { jailedLaunchArgv } from './launcher.js';
import { fdsetPath, nextFdset } from './pass-fd.js';

const cfg: VmConfig = {
  name: 'web1',
  cpus: 1,
  memoryMiB: 128,
  image: { kind: 'test-guest' },
  disks: [],
  nics: [{ network: 'n', backend: 'linux', bridge: 'b', tap: 'vlt-1', mac: '52:54:00:00:00:01', mtu: 1500 }],
  state: 'running',
};
const paths = vmPaths('/var/lib/vmlink/agent', 'web1');
const base = {
  config: cfg,
  paths,
  imagesDir: '/img',
  qemuBinary: '/usr/bin/qemu-system-x86_64',
  ldCache: true,
};

describe('jailSpec', () => {
  it('shows a test guest only /usr, the loader cache, its kernel and its own directory', () => {
    expect(jailSpec({ ...base, accel: 'tcg' })).toEqual({
      root: '/var/lib/vmlink/agent/vms/web1/jail',
      readOnly: ['/usr', '/etc/ld.so.cache', '/img/test-guest'],
      readWrite: ['/var/lib/vmlink/agent/vms/web1'],
      devices: ['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom'],
    });
  });

  it('adds /dev/kvm under KVM, a qcow2 base image, and a QEMU installed outside /usr', () => {
    const vm: VmConfig = {
      ...cfg,
      image: { kind: 'qcow2', path: '/images/deb.qcow2', cloudInit: { sshAuthorizedKeys: [] } },
    };
    const j = jailSpec({
      ...base,
      config: vm,
      accel: 'kvm',
      qemuBinary: '/opt/qemu/bin/qemu',
      ldCache: false,
    });
    expect(j.readOnly).toEqual(['/usr', '/opt/qemu/bin', '/images/deb.qcow2']);
    expect(j.devices).toContain('/dev/kvm');
  });
});

describe('jailedLaunchArgv', () => {
  it('passes numeric ids, taps, logs, the jail, the cgroup and the limits before the QEMU command', () => {
    const jail = jailSpec({ ...base, accel: 'tcg' });
    expect(
      jailedLaunchArgv(
        '/l',
        {
          identity: { uid: 7000, gid: 7000, groups: [995, 104] },
          taps: ['vlt-1'],
          appendFiles: [paths.consoleLog],
          jail,
          cgroup: '/sys/fs/cgroup/vmlink-vms/vm-web1',
          maxOpenFiles: 4096,
          maxTasks: 1024,
        },
        ['/usr/bin/qemu-system-x86_64', '-m', '128'],
      ).join(' '),
    ).toBe(
      [
        '/l --uid 7000 --gid 7000 --group 995 --group 104 --tap vlt-1',
        `--append-file ${paths.consoleLog} --jail ${paths.jailRoot}`,
        '--bind-ro /usr --bind-ro /etc/ld.so.cache --bind-ro /img/test-guest',
        `--bind-rw ${paths.vmDir}`,
        '--dev /dev/null --dev /dev/zero --dev /dev/full --dev /dev/random --dev /dev/urandom',
        '--private-net --cgroup /sys/fs/cgroup/vmlink-vms/vm-web1 --nofile 4096 --nproc 1024',
        '-- /usr/bin/qemu-system-x86_64 -m 128',
      ].join(' '),
    );
  });
});

describe('nextFdset', () => {
  it('takes the lowest fd set id from 100 that QEMU does not use (ids below are the launch-time ones)', () => {
    expect(nextFdset([{ 'fdset-id': 1 }])).toBe(100);
    expect(nextFdset([{ 'fdset-id': 1 }, { 'fdset-id': 100 }, { 'fdset-id': 102 }])).toBe(101);
    expect(fdsetPath(101)).toBe('/dev/fdset/101');
  });
});

describe('vmLaunchArgv', () => {
  it('creates the VM cgroup on a v2 host and has the launcher move QEMU into it; none elsewhere', async () => {
    const root = await mkdtemp(join(tmpdir(), 'vmlink-launch-cg-'));
    try {
      await writeFile(join(root, 'cgroup.controllers'), 'memory pids\n');
      await writeFile(join(root, 'cgroup.subtree_control'), '');
      await mkdir(join(root, VM_CGROUP_PARENT));
      await writeFile(join(root, VM_CGROUP_PARENT, 'cgroup.controllers'), 'memory pids\n');
      await writeFile(join(root, VM_CGROUP_PARENT, 'cgroup.subtree_control'), '');
      const input = {
        ...base,
        accel: 'tcg' as const,
        launcher: '/l',
        identity: { uid: 7000, gid: 7000, groups: [] },
        qemuArgv: ['/usr/bin/qemu-system-x86_64'],
      };
      const v2 = await vmLaunchArgv({ ...input, cgroupRoot: root });
      expect(v2.slice(v2.indexOf('--cgroup'), v2.indexOf('--cgroup') + 2)).toEqual([
        '--cgroup',
        vmCgroupPath('web1', root),
      ]);
      expect(await readFile(join(vmCgroupPath('web1', root), 'pids.max'), 'utf8')).toBe('1024');
      expect(await vmLaunchArgv(input)).not.toContain('--cgroup');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('network of a jailed QEMU', () => {
  it('is empty, unless the VM has an iSCSI or NFS disk (QEMU connects to the storage itself); a volume root shows nothing', async () => {
    const input = {
      ...base,
      accel: 'tcg' as const,
      launcher: '/l',
      identity: { uid: 7000, gid: 7000, groups: [] },
      qemuArgv: ['/usr/bin/qemu-system-x86_64'],
    };
    expect(await vmLaunchArgv(input)).toContain('--private-net');
    const file = {
      kind: 'file' as const,
      pool: 'p',
      volume: 'v',
      path: '/pools/p/v.qcow2',
      format: 'qcow2' as const,
    };
    expect(
      await vmLaunchArgv({ ...input, config: { ...cfg, disks: [{ name: 'd', source: file }] } }),
    ).toContain('--private-net');
    const nfs = {
      kind: 'nfs' as const,
      pool: 'n',
      volume: 'v',
      server: '10.0.0.5',
      export: '/vmlink/n',
      file: 'v.qcow2',
      format: 'qcow2' as const,
    };
    const withNfs: VmConfig = {
      ...cfg,
      image: { kind: 'volume', pool: 'n', volume: 'v', clone: false },
      rootSource: nfs,
    };
    expect(await vmLaunchArgv({ ...input, config: withNfs })).not.toContain('--private-net');
    expect(jailSpec({ ...base, config: withNfs, accel: 'tcg' }).readOnly).toEqual([
      '/usr',
      '/etc/ld.so.cache',
    ]);
  });
});
