import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processMatches, QemuDriver } from '../../src/drivers/hypervisor/qemu/driver.js';
import { defaultLauncherPath } from '../../src/drivers/hypervisor/qemu/launcher.js';
import { FastLuksRunner } from '../../src/drivers/storage/fast-luks.test-util.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { VmConfig } from '../../src/shared/model.js';
import { createBridgedTaps } from '../helpers/guest-net.js';
import { acquireVmLock } from '../helpers/vmlock.js';

// One guest with a LUKS-encrypted data disk: the key reaches qemu-img on stdin and QEMU over QMP only; the guest
// writes and reads the disk, and after a restart (key sent again) reads what it wrote.

const runner = new SystemRunner();
const NS = 'vltest-enc';
const BRIDGE = 'vltest-encbr';
const TAP = 'vlt-enc00001';
const VM = 'vltest-enc1';
const GUEST_DIR = '/var/lib/vmlink/images/test-guest';
const KEY = 'enc-test passphrase 91c2e7';
const KEY_B64 = Buffer.from(KEY).toString('base64');
const PATTERN = 'vmlink-encrypted-disk-pattern';
const secrets = [{ name: 'vault-key', value: KEY_B64 }];

const cfg: VmConfig = {
  name: VM,
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks: [{ name: 'vault', sizeMiB: 16, encryption: { secret: 'vault-key' } }],
  nics: [{ network: 'n', backend: 'linux', bridge: BRIDGE, tap: TAP, mac: '52:54:00:97:00:02', mtu: 1500 }],
  state: 'running',
};

const isRoot = process.getuid?.() === 0;

describe.runIf(isRoot && existsSync(`${GUEST_DIR}/vmlinuz`))(
  'encrypted VM disk (LUKS qcow2) on real QEMU',
  () => {
    let release: (() => Promise<void>) | undefined;
    let stateDir = '';
    let driver: QemuDriver;

    const diskFile = () => join(stateDir, 'vms', VM, 'disk-vault.qcow2');
    /** The guest's device of the disk whose virtio serial is `vault`. */
    const guestDevice = async () => {
      const r = await driver.guestExec(VM, [
        'sh',
        '-c',
        'for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = vault ] && echo /dev/$(basename $d); done',
      ]);
      return r.stdout.trim();
    };
    const qemuPid = async () =>
      Number((await readFile(join(stateDir, 'vms', VM, 'run/qemu.pid'), 'utf8')).trim());

    beforeAll(async () => {
      if (!existsSync(defaultLauncherPath())) await runner.run(['bash', 'scripts/build-native.sh']);
      release = await acquireVmLock();
      await createBridgedTaps(runner, NS, BRIDGE, [TAP]);
      stateDir = await mkdtemp(join(tmpdir(), 'vmlink-enc-int-'));
      await chmod(stateDir, 0o711);
      // Its LUKS disk made with a short key derivation (fast-luks.test-util.ts): each open of it by QEMU is quick.
      driver = new QemuDriver({ runner: new FastLuksRunner(), stateDir, netns: NS });
    });

    afterAll(async () => {
      try {
        if (driver) await driver.delete(VM).catch(() => {});
        await driver?.close();
      } finally {
        await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
        if (stateDir) await rm(stateDir, { recursive: true, force: true });
        await release?.();
      }
    });

    it('creates a LUKS qcow2, boots with the key over QMP only, writes, restarts and reads it back', async () => {
      await driver.create(cfg, 'enc-h1', undefined, secrets);
      const info = JSON.parse(
        (await runner.run(['qemu-img', 'info', '-U', '--output=json', diskFile()])).stdout,
      ) as { encrypted?: boolean; 'format-specific'?: { data?: { encrypt?: { format?: string } } } };
      expect(info.encrypted).toBe(true);
      expect(info['format-specific']?.data?.encrypt?.format).toBe('luks');

      // No key, no start: the agent refuses before QEMU runs.
      await expect(driver.start(VM)).rejects.toThrow(
        /encrypted with secret vault-key, whose value the controller did not send/,
      );

      await driver.start(VM, undefined, secrets);
      const pid = await qemuPid();
      expect(await processMatches(pid, VM)).toBe(true);
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
      expect(cmdline).toContain('-S'); // started paused, disks attached over QMP, then continued
      for (const where of [
        cmdline,
        await readFile(join(stateDir, 'vms', VM, 'config.json'), 'utf8'),
        await readFile(join(stateDir, 'vms', VM, 'qemu.log'), 'utf8').catch(() => ''),
      ]) {
        expect(where).not.toContain(KEY);
        expect(where).not.toContain(KEY_B64);
      }
      await driver.waitForGuestAgent(VM);
      const dev = await guestDevice();
      expect(dev).toMatch(/^\/dev\/vd[a-z]$/);
      const w = await driver.guestExec(VM, ['sh', '-c', `printf %s ${PATTERN} > ${dev} && sync`]);
      expect(w.exitCode).toBe(0);
      // The host's file holds ciphertext only.
      expect((await readFile(diskFile())).includes(Buffer.from(PATTERN))).toBe(false);

      await driver.stop(VM, { force: false, timeoutMs: 10_000 });
      // A wrong key: QEMU cannot open the LUKS header, the start fails saying so, and no QEMU is left running.
      const wrong = [{ name: 'vault-key', value: Buffer.from('not the key').toString('base64') }];
      const refused = await driver.start(VM, undefined, wrong).catch((e: unknown) => e);
      expect(String(refused)).toMatch(/disk vault could not be attached: .*(password|key)/i);
      expect(String(refused)).not.toContain(wrong[0]!.value);
      expect((await driver.list()).find((v) => v.name === VM)?.state).toBe('stopped');
      await driver.start(VM, undefined, secrets);
      await driver.waitForGuestAgent(VM);
      const r = await driver.guestExec(VM, ['head', '-c', String(PATTERN.length), await guestDevice()]);
      expect(r.stdout).toBe(PATTERN);
    });
  },
);
