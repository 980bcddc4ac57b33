import { describe, expect, it } from 'vitest';
import { formatArgv } from '../../../exec/runner.js';
import type { NicConfig, VmConfig } from '../../../shared/model.js';
import { buildSeedFiles } from './cloudinit.js';
import { assertQemuSafePath, buildQemuArgv, testGuestAppend, vmPaths } from './cmdline.js';

const nic = (i: number, extra: Partial<NicConfig> = {}): NicConfig => ({
  network: `net${i}`,
  backend: 'linux',
  bridge: `vlb-0000000${i}`,
  tap: `vlt-1234abc${i}`,
  mac: `52:54:00:00:00:0${i}`,
  mtu: 1500,
  ...extra,
});

const base: VmConfig = {
  name: 'web1',
  cpus: 2,
  memoryMiB: 512,
  image: { kind: 'test-guest' },
  disks: [],
  nics: [nic(0)],
  state: 'running',
};

/** One option per line, for readable golden files. */
function render(argv: string[]): string {
  const out: string[] = [argv[0]!];
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    if (a.startsWith('-') && next !== undefined && !next.startsWith('-')) {
      out.push(`  ${formatArgv([a, next])}`);
      i++;
    } else out.push(`  ${formatArgv([a])}`);
  }
  return `${out.join(' \\\n')}\n`;
}

function argv(cfg: VmConfig, accel: 'kvm' | 'tcg' = 'tcg', testGuestKernel?: string): string[] {
  return buildQemuArgv({
    config: cfg,
    accel,
    paths: vmPaths('/var/lib/vmlink/agent', cfg.name),
    imagesDir: '/var/lib/vmlink/images',
    qemuBinary: '/usr/bin/qemu-system-x86_64',
    ...(testGuestKernel ? { testGuestKernel } : {}),
  });
}

describe('buildQemuArgv (golden)', () => {
  it('huge pages: RAM from a preallocated hugetlb memfd backend named by the machine (pinning adds no argument)', async () => {
    const cfg: VmConfig = { ...base, hugepages: true, cpu: { pin: [2], quotaPercent: 50 } };
    await expect(render(argv(cfg, 'kvm'))).toMatchFileSnapshot('./__golden__/test-guest-hugepages.txt');
  });

  it('test guest with two NICs, a static IP and a jumbo MTU under TCG', async () => {
    const cfg: VmConfig = {
      ...base,
      nics: [
        nic(0, { staticIp: { address: '10.0.0.5', prefixLength: 24, gateway: '10.0.0.1' } }),
        nic(1, { mtu: 9000, staticIp: { address: '192.168.50.7', prefixLength: 28 } }),
      ],
    };
    await expect(render(argv(cfg))).toMatchFileSnapshot('./__golden__/test-guest-2nics-tcg.txt');
  });

  it('test guest under KVM (cpu host) with DHCP', async () => {
    await expect(render(argv(base, 'kvm'))).toMatchFileSnapshot('./__golden__/test-guest-kvm.txt');
  });

  it("boots the test guest's PVH kernel when the driver found one, with the same initrd and command line", () => {
    const bz = argv(base);
    const pvh = argv(base, 'tcg', '/var/lib/vmlink/images/test-guest/vmlinux');
    const at = bz.indexOf('-kernel');
    expect(bz[at + 1]).toBe('/var/lib/vmlink/images/test-guest/vmlinuz');
    expect(pvh[at + 1]).toBe('/var/lib/vmlink/images/test-guest/vmlinux');
    expect(pvh.filter((_, i) => i !== at + 1)).toEqual(bz.filter((_, i) => i !== at + 1));
  });

  it('test guest with extra disks', async () => {
    const cfg: VmConfig = {
      ...base,
      disks: [
        { name: 'data', sizeMiB: 1024 },
        { name: 'a-very-long-disk-name-beyond-twenty', sizeMiB: 64 },
      ],
    };
    await expect(render(argv(cfg))).toMatchFileSnapshot('./__golden__/test-guest-disks.txt');
  });

  it('qcow2 cloud image with a cloud-init seed, a disk and two NICs', async () => {
    const cfg: VmConfig = {
      ...base,
      name: 'db1',
      image: {
        kind: 'qcow2',
        path: '/srv/images/debian-12-genericcloud-amd64.qcow2',
        cloudInit: { sshAuthorizedKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk1 admin@example: laptop'] },
      },
      disks: [{ name: 'data', sizeMiB: 2048 }],
      nics: [
        nic(0),
        nic(1, { mtu: 1400, staticIp: { address: '10.1.0.9', prefixLength: 24, gateway: '10.1.0.1' } }),
      ],
    };
    await expect(render(argv(cfg))).toMatchFileSnapshot('./__golden__/qcow2-cloudinit.txt');
    const seed = buildSeedFiles(cfg);
    const text = Object.entries(seed)
      .map(([f, c]) => `==> ${f} <==\n${c}`)
      .join('\n');
    await expect(text).toMatchFileSnapshot('./__golden__/qcow2-cloudinit.seed.txt');
  });
});

describe('cloud-init seed', () => {
  const cfg: VmConfig = {
    ...base,
    image: {
      kind: 'qcow2',
      path: '/srv/a.qcow2',
      cloudInit: { userData: '#cloud-config\npackages: [nginx]\n', sshAuthorizedKeys: [] },
    },
  };
  it('passes user data through verbatim', () => {
    expect(buildSeedFiles(cfg)['user-data']).toBe('#cloud-config\npackages: [nginx]\n');
  });
  it('changes the instance id when the network config changes, and only then', () => {
    const a = buildSeedFiles(cfg)['meta-data'];
    expect(buildSeedFiles({ ...cfg, cpus: 8 })['meta-data']).toBe(a);
    expect(buildSeedFiles({ ...cfg, nics: [nic(0, { mac: '52:54:00:aa:bb:cc' })] })['meta-data']).not.toBe(a);
  });
  it('refuses a test-guest VM', () => {
    expect(() => buildSeedFiles(base)).toThrow(/no cloud-init seed/);
  });
});

describe('testGuestAppend', () => {
  it('names the hostname, and only non-default MTUs', () => {
    expect(testGuestAppend(base)).toBe('console=ttyS0 quiet panic=-1 vmlink.hostname=web1');
  });
  it('omits the gateway when there is none', () => {
    expect(
      testGuestAppend({ ...base, nics: [nic(0, { staticIp: { address: '10.0.0.5', prefixLength: 24 } })] }),
    ).toContain('vmlink.ip.eth0=10.0.0.5/24');
  });
});

describe('paths', () => {
  it('puts QEMU-created files in run/ and the rest (logs included) in the VM directory', () => {
    const p = vmPaths('/s', 'v');
    expect([p.qmpSocket, p.pidfile]).toEqual(['/s/vms/v/run/qmp.sock', '/s/vms/v/run/qemu.pid']);
    expect([p.consoleLog, p.qemuLog, p.jailRoot]).toEqual([
      '/s/vms/v/console.log',
      '/s/vms/v/qemu.log',
      '/s/vms/v/jail',
    ]);
    expect([p.configFile, p.disk('d'), p.rootDisk]).toEqual([
      '/s/vms/v/config.json',
      '/s/vms/v/disk-d.qcow2',
      '/s/vms/v/root.qcow2',
    ]);
  });
  it('refuses paths QEMU options would split', () => {
    expect(() => assertQemuSafePath('/a,b')).toThrow(/commas/);
    expect(() => assertQemuSafePath('/a/b')).not.toThrow();
  });
});
