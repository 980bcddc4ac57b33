import { expect, it } from 'vitest';
import { defaultLauncherPath } from '../drivers/hypervisor/qemu/launcher.js';
import { RecordingRunner } from '../exec/runner.js';
import { hostPrerequisites, storageHostPrerequisites } from './doctor.js';

it('names each missing binary with the Debian package that provides it, and reports versions found', async () => {
  const runner = new RecordingRunner()
    .on(['qemu-system-x86_64', '--version'], { stdout: 'QEMU emulator version 7.2.22\nCopyright' })
    .on(['iperf3', '--version'], { code: 127, stderr: 'iperf3: not found' })
    .on(['ovs-vsctl', '--version'], { code: 127 });
  const checks = await hostPrerequisites(runner);
  const by = (name: string) => checks.find((c) => c.name === name);
  expect(by('qemu')).toMatchObject({ ok: true, detail: 'QEMU emulator version 7.2.22' });
  expect(by('iperf3')).toMatchObject({ ok: false, detail: 'not found' });
  expect(by('iperf3')?.fix).toMatch(/^apt-get install iperf3 /);
  expect(by('open vswitch')?.fix).toMatch(/^apt-get install openvswitch-switch /);
  // Only read-only queries run: doctor changes nothing.
  expect(runner.lines().map((l) => l.replace(defaultLauncherPath(), '<launcher>'))).toMatchInlineSnapshot(`
    [
      "qemu-system-x86_64 --version",
      "qemu-img --version",
      "ip -V",
      "nft --version",
      "dnsmasq --version",
      "/bin/busybox --help",
      "ping -V",
      "genisoimage --version",
      "ovs-vsctl --version",
      "iperf3 --version",
      "getent passwd vmlink-qemu",
      "<launcher>",
      "getent group kvm",
    ]
  `);
});

it('a storage host checks what its pools need (tgtd, ganesha, rpcbind, qemu-img), not QEMU or bridges', async () => {
  const runner = new RecordingRunner()
    .on(['tgtadm', '--version'], { stdout: '1.0.85\n' })
    .on(['sh', '-c', 'command -v ganesha.nfsd'], { code: 1 });
  const checks = await storageHostPrerequisites(runner);
  expect(checks.map((c) => c.name)).toEqual(['root', 'node', 'qemu-img', 'tgtd', 'nfs-ganesha', 'rpcbind']);
  expect(checks.find((c) => c.name === 'tgtd')).toMatchObject({ ok: true, detail: '1.0.85' });
  expect(checks.find((c) => c.name === 'nfs-ganesha')?.fix).toMatch(
    /^apt-get install nfs-ganesha nfs-ganesha-vfs /,
  );
  expect(runner.lines()).not.toContain('qemu-system-x86_64 --version');
});
