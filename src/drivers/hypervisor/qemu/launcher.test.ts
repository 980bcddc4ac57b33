import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../../exec/runner.js';
import { UnsupportedError } from '../../../shared/errors.js';
import {
  assertLauncher,
  describeLaunchExit,
  launchArgv,
  lookupQemuUser,
  type QemuUser,
  userCanAccess,
} from './launcher.js';

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-launcher-test-'));
  await chmod(dir, 0o711);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('lookupQemuUser', () => {
  it('reads uid, gid and groups', async () => {
    const r = new RecordingRunner()
      .on(['getent', 'passwd'], { stdout: 'vmlink-qemu:x:995:995::/home/vmlink-qemu:/usr/sbin/nologin\n' })
      .on(['id', '-G'], { stdout: '995 993\n' });
    expect(await lookupQemuUser(r, 'vmlink-qemu')).toEqual({
      name: 'vmlink-qemu',
      uid: 995,
      gid: 995,
      groups: [995, 993],
    });
  });
  it('says to run setup when the user is missing', async () => {
    const r = new RecordingRunner().on(['getent'], { code: 2 });
    const e = await lookupQemuUser(r, 'vmlink-qemu').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnsupportedError);
    expect((e as Error).message).toBe('user vmlink-qemu (QEMU runs as it) does not exist: run npm run setup');
  });
  it('refuses a root user', async () => {
    const r = new RecordingRunner().on(['getent'], { stdout: 'toor:x:0:0::/:/bin/sh\n' });
    await expect(lookupQemuUser(r, 'toor')).rejects.toThrow(/must not run as root/);
  });
});

describe('userCanAccess', () => {
  const u: QemuUser = { name: 'q', uid: 4242, gid: 4243, groups: [4243] };
  it('follows owner, group and other bits along the path', async () => {
    await mkdir(join(dir, 'open'), { mode: 0o755 });
    await mkdir(join(dir, 'closed'), { mode: 0o700 });
    await writeFile(join(dir, 'open/world'), '', { mode: 0o644 });
    await writeFile(join(dir, 'open/private'), '', { mode: 0o600 });
    await writeFile(join(dir, 'closed/world'), '', { mode: 0o644 });
    await chmod(join(dir, 'closed'), 0o700);
    expect(userCanAccess(join(dir, 'open/world'), u, 'r')).toBe(true);
    expect(userCanAccess(join(dir, 'open/world'), u, 'rw')).toBe(false);
    expect(userCanAccess(join(dir, 'open/private'), u, 'r')).toBe(false);
    expect(userCanAccess(join(dir, 'closed/world'), u, 'r')).toBe(false);
    expect(userCanAccess(join(dir, 'open/missing'), u, 'r')).toBe(false);
    expect(userCanAccess(join(dir, 'open/private'), { ...u, uid: 0 }, 'rw')).toBe(true); // owner bits (root owns it)
    expect(userCanAccess(join(dir, 'open'), u, 'x')).toBe(true);
  });
});

describe('launch argv', () => {
  it('puts taps before -- in NIC order', () => {
    expect(
      launchArgv('/l', 'vmlink-qemu', ['vlt-a', 'vlt-b'], ['/usr/bin/qemu-system-x86_64', '-m', '64']),
    ).toEqual([
      '/l',
      '--user',
      'vmlink-qemu',
      '--tap',
      'vlt-a',
      '--tap',
      'vlt-b',
      '--',
      '/usr/bin/qemu-system-x86_64',
      '-m',
      '64',
    ]);
  });
  it('names launcher exit codes', () => {
    expect(describeLaunchExit(66)).toBe('tap open failed');
    expect(describeLaunchExit(1)).toBeUndefined();
  });
  it('asks to build the launcher when it is missing', () => {
    expect(() => assertLauncher(join(dir, 'nope'))).toThrow(/run npm run build:native/);
  });
});
