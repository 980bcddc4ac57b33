import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ExecError, RecordingRunner, type RunOptions, type RunResult } from '../../../exec/runner.js';
import {
  cachedAccelerator,
  PROBE_EXIT,
  probeAccelerator,
  probeFirmware,
  resetAcceleratorCache,
  runProbe,
} from './accel.js';
import type { QemuUser } from './launcher.js';

const user: QemuUser = { name: 'vmlink-qemu', uid: 995, gid: 995, groups: [995] };
let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-accel-test-'));
  await chmod(dir, 0o711); // the QEMU user traverses it to reach the fake KVM device
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => resetAcceleratorCache());

const opts = (runner: RecordingRunner, kvmDevice?: string) => ({
  runner,
  launcher: '/opt/vmlink/build/vmlink-launch',
  user,
  qemuBinary: '/usr/bin/qemu-system-x86_64',
  ...(kvmDevice ? { kvmDevice } : {}),
});

describe('probeFirmware', () => {
  it('is 64 KiB with mov al,0x31; out 0xf4,al; hlt at the reset vector', () => {
    const fw = probeFirmware();
    expect(fw.length).toBe(65536);
    expect([...fw.subarray(0xfff0, 0xfff7)]).toEqual([0xb0, 0x31, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]);
    expect(PROBE_EXIT).toBe((0x31 << 1) | 1);
  });
});

describe('runProbe', () => {
  it('runs QEMU through the launcher as the QEMU user with isa-debug-exit, and passes on exit 99', async () => {
    const r = new RecordingRunner().on(['/opt/vmlink/build/vmlink-launch'], { code: 99 });
    expect(await runProbe('tcg', opts(r))).toMatchObject({ accel: 'tcg', ok: true });
    const argv = r.calls[0]!.argv;
    expect(argv.slice(0, 5)).toEqual([
      '/opt/vmlink/build/vmlink-launch',
      '--user',
      'vmlink-qemu',
      '--',
      '/usr/bin/qemu-system-x86_64',
    ]);
    expect(argv).toContain('isa-debug-exit,iobase=0xf4,iosize=0x04');
    expect(argv).toContain('q35,accel=tcg');
    expect(argv[argv.indexOf('-bios') + 1]).toMatch(/probe\.bin$/);
  });

  it('explains other exits, naming launcher failures', async () => {
    const r = new RecordingRunner().on(['/opt/vmlink/build/vmlink-launch'], {
      code: 65,
      stderr: 'vmlink-launch: user vmlink-qemu not found\n',
    });
    expect((await runProbe('kvm', opts(r))).reason).toBe(
      'probe exited with 65 (launcher: user lookup failed): vmlink-launch: user vmlink-qemu not found',
    );
  });

  it('reports a timeout', async () => {
    const runner = new RecordingRunner();
    runner.run = async (argv: readonly string[], o: RunOptions = {}): Promise<RunResult> => {
      expect(o.timeoutMs).toBe(5000);
      throw new ExecError({ argv: [...argv], code: 137, stdout: '', stderr: '' }, 'timed out after 5000 ms');
    };
    expect(await runProbe('kvm', opts(runner))).toMatchObject({
      ok: false,
      reason: 'probe timed out after 5 s (killed)',
    });
  });
});

describe('probeAccelerator', () => {
  it('falls back to TCG without running KVM when /dev/kvm is not accessible to the QEMU user', async () => {
    const kvm = join(dir, 'kvm-0600');
    await writeFile(kvm, '', { mode: 0o600 });
    const r = new RecordingRunner().on(['/opt/vmlink/build/vmlink-launch'], { code: 99 });
    const res = await probeAccelerator(opts(r, kvm));
    expect(res.accelerator).toBe('tcg');
    expect(res.acceleratorReason).toMatch(
      new RegExp(
        `^KVM unusable: ${kvm} not accessible to vmlink-qemu; using TCG \\(probe passed in \\d+ ms\\)$`,
      ),
    );
    expect(r.calls).toHaveLength(1);
  });

  it('uses KVM when the device is accessible and the probe exits 99', async () => {
    const kvm = join(dir, 'kvm-0666');
    await writeFile(kvm, '');
    await chmod(kvm, 0o666);
    const r = new RecordingRunner().on(['/opt/vmlink/build/vmlink-launch'], { code: 99 });
    expect((await probeAccelerator(opts(r, kvm))).accelerator).toBe('kvm');
    expect(r.calls[0]!.argv).toContain('q35,accel=kvm');
  });

  it('says why KVM failed when its probe fails', async () => {
    const kvm = join(dir, 'kvm-0666b');
    await writeFile(kvm, '');
    await chmod(kvm, 0o666);
    const r = new RecordingRunner();
    let n = 0;
    r.run = async (argv: readonly string[]) => ({
      argv: [...argv],
      code: n++ === 0 ? 134 : 99,
      stdout: '',
      stderr: 'kvm_buf_set_msrs: Assertion failed',
    });
    const res = await probeAccelerator(opts(r, kvm));
    expect(res.acceleratorReason).toMatch(
      /^KVM unusable: probe exited with 134: kvm_buf_set_msrs: Assertion failed; using TCG/,
    );
  });

  it('throws when not even TCG runs, and caches only successes', async () => {
    const r = new RecordingRunner().on(['/opt/vmlink/build/vmlink-launch'], {
      code: 1,
      stderr: 'qemu: broken',
    });
    await expect(cachedAccelerator(opts(r, join(dir, 'none')))).rejects.toThrow(/QEMU cannot run guests/);
    const ok = new RecordingRunner().on(['/opt/vmlink/build/vmlink-launch'], { code: 99 });
    const a = await cachedAccelerator(opts(ok, join(dir, 'none')));
    const b = await cachedAccelerator(opts(ok, join(dir, 'none')));
    expect(a).toBe(b);
    expect(ok.calls).toHaveLength(1);
  });
});
