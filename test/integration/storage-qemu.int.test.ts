import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuDriver } from '../../src/drivers/hypervisor/qemu/driver.js';
import { defaultLauncherPath } from '../../src/drivers/hypervisor/qemu/launcher.js';
import { FastLuksRunner } from '../../src/drivers/storage/fast-luks.test-util.js';
import { storageDrivers } from '../../src/drivers/storage/registry.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { DiskConfig, VmConfig } from '../../src/shared/model.js';
import { createBridgedTaps } from '../helpers/guest-net.js';
import { acquireVmLock } from '../helpers/vmlock.js';

// One booted test guest (TCG: slow, so everything runs on it) with disks from a dir pool on this host: volumes the
// jailed QEMU gets as descriptors root opened, an encrypted one keyed over QMP; hot-plug attach and detach seen by
// the guest; an online resize seen by it; VM snapshots (disks only, and with RAM) rolled back running and stopped.

const runner = new SystemRunner();
const NS = 'vltest-stq';
const BRIDGE = 'vltest-stqbr';
const TAP = 'vlt-stq00001';
const VM = 'vltest-stq1';
const GUEST_DIR = '/var/lib/vmlink/images/test-guest';
const KEY = 'storage-qemu passphrase 5e1a90';
const KEY_B64 = Buffer.from(KEY).toString('base64');
const PATTERN = 'vmlink-pool-vault-pattern';
const secrets = [{ name: 'vault-key', value: KEY_B64 }];
const MiB = 1024 * 1024;

const isRoot = process.getuid?.() === 0;

describe.runIf(isRoot && existsSync(`${GUEST_DIR}/vmlinuz`))('VM disks from a dir pool on real QEMU', () => {
  let release: (() => Promise<void>) | undefined;
  let stateDir = '';
  let poolDir = '';
  let driver: QemuDriver;

  const volume = (name: string): DiskConfig => ({
    name,
    source: {
      kind: 'file',
      pool: 'local',
      volume: name,
      path: join(poolDir, `${name}.qcow2`),
      format: 'qcow2',
    },
  });
  const cfgWith = (disks: DiskConfig[]): VmConfig => ({
    name: VM,
    cpus: 1,
    memoryMiB: 256,
    image: { kind: 'test-guest' },
    disks,
    nics: [{ network: 'n', backend: 'linux', bridge: BRIDGE, tap: TAP, mac: '52:54:00:97:00:21', mtu: 1500 }],
    state: 'running',
  });
  const vault = (): DiskConfig => ({ ...volume('vault'), encryption: { secret: 'vault-key' } });
  /** An installer ISO as a CD-ROM (scsi-cd; the test guest has no driver for it, so QEMU's side is what is checked). */
  const installer = (): DiskConfig => ({
    name: 'installer',
    media: 'cdrom',
    source: {
      kind: 'file',
      pool: 'local',
      volume: 'installer',
      path: join(poolDir, 'installer.iso'),
      format: 'iso',
    },
  });

  const sh = async (script: string) => {
    const r = await driver.guestExec(VM, ['sh', '-c', script], { timeoutMs: 30_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    return r.stdout.trim();
  };
  /** The guest's block device whose virtio serial is `serial`, or '' when it has none. */
  const deviceOf = (serial: string) =>
    sh(
      `for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = ${serial} ] && echo /dev/$(basename $d); done; true`,
    );
  const waitDevice = async (serial: string, present: boolean) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const dev = await deviceOf(serial);
      if ((dev !== '') === present) return dev;
      if (Date.now() > deadline)
        throw new Error(`disk ${serial} ${present ? 'never appeared' : 'never went'}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  };
  /** Writes `text` at MiB `at` of the guest's disk `dev`, flushed to the host. */
  const write = (dev: string, at: number, text: string) =>
    sh(`printf %s ${text} | dd of=${dev} bs=1M seek=${at} conv=notrunc,fsync 2>/dev/null; sync`);
  /** Reads `n` bytes at MiB `at` of `dev`, past the guest's page cache. */
  const read = (dev: string, at: number, n: number) =>
    sh(`echo 3 > /proc/sys/vm/drop_caches; dd if=${dev} bs=1M skip=${at} count=1 2>/dev/null | head -c ${n}`);

  beforeAll(async () => {
    if (!existsSync(defaultLauncherPath())) await runner.run(['bash', 'scripts/build-native.sh']);
    release = await acquireVmLock();
    await createBridgedTaps(runner, NS, BRIDGE, [TAP]);
    stateDir = await mkdtemp(join(tmpdir(), 'vmlink-stq-int-'));
    await chmod(stateDir, 0o711);
    // The pool is root's alone: the VM's uid can neither list nor open it, only use the descriptors it is handed.
    poolDir = join(await mkdtemp(join(tmpdir(), 'vmlink-stq-pool-')), 'local');
    await mkdir(poolDir, { mode: 0o700 });
    for (const v of ['data', 'hot'])
      await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', join(poolDir, `${v}.qcow2`), '16M']);
    // The key reaches qemu-img on stdin, as the dir pool backend hands it; a short key derivation (fast-luks.test-util.ts)
    // makes each open of the volume (QEMU's at start and hot-plug, qemu-img's) quick.
    await storageDrivers
      .dir({ runner: new FastLuksRunner() })
      .createVolume({ name: 'vault', dir: poolDir, sizeMiB: 16, encryptionKeyBase64: KEY_B64 });
    await mkdir(join(poolDir, '..', 'iso'));
    await runner.run([
      'genisoimage',
      '-quiet',
      '-V',
      'INSTALLER',
      '-o',
      join(poolDir, 'installer.iso'),
      join(poolDir, '..', 'iso'),
    ]);
    driver = new QemuDriver({ runner, stateDir, netns: NS });
  });

  afterAll(async () => {
    try {
      if (driver) await driver.delete(VM).catch(() => {});
      await driver?.close();
    } finally {
      await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
      if (stateDir) await rm(stateDir, { recursive: true, force: true });
      if (poolDir) await rm(join(poolDir, '..'), { recursive: true, force: true });
      await release?.();
    }
  });

  it('attaches pool volumes at start, hot-plugs, resizes online, snapshots and rolls back', async () => {
    await driver.create(cfgWith([volume('data'), vault(), installer()]), 'h1', undefined, secrets);
    await expect(driver.start(VM)).rejects.toThrow(/disk vault is encrypted with secret vault-key/);
    await driver.start(VM, undefined, secrets);
    await driver.waitForGuestAgent(VM);

    // Both volumes seen by their serials; the key nowhere on a command line, in the VM's record or its logs.
    const data = await waitDevice('data', true);
    const vaultDev = await waitDevice('vault', true);
    expect(data).toMatch(/^\/dev\/vd[a-z]$/);
    const cmdlines: string[] = [];
    for (const pid of (await readdir('/proc')).filter((e) => /^\d+$/.test(e)))
      cmdlines.push(await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => ''));
    for (const where of [
      cmdlines.join('\n'),
      await readFile(join(stateDir, 'vms', VM, 'config.json'), 'utf8'),
      await readFile(join(stateDir, 'vms', VM, 'qemu.log'), 'utf8').catch(() => ''),
    ]) {
      expect(where).not.toContain(KEY);
      expect(where).not.toContain(KEY_B64);
    }
    // QEMU has them open through fd sets; openDisks names the pool's files.
    const open = await driver.openDisks(VM);
    expect(open.map((o) => [o.disk, o.target, o.readOnly])).toEqual(
      expect.arrayContaining([
        ['data', join(poolDir, 'data.qcow2'), false],
        ['vault', join(poolDir, 'vault.qcow2'), false],
        ['installer', join(poolDir, 'installer.iso'), true],
      ]),
    );

    // The encrypted volume holds ciphertext: not readable without its key, and its bytes do not hold the data.
    await write(vaultDev, 0, PATTERN);
    expect(await read(vaultDev, 0, PATTERN.length)).toBe(PATTERN);
    expect((await readFile(join(poolDir, 'vault.qcow2'))).includes(Buffer.from(PATTERN))).toBe(false);
    const noKey = await runner.run(
      ['qemu-io', '-U', '-r', '-c', 'read 0 512', join(poolDir, 'vault.qcow2')],
      { allowFailure: true },
    );
    expect(`${noKey.stdout}${noKey.stderr}`).toMatch(/key-secret|encrypt/i);

    // Hot-plug: attach a volume, seen; detach it, the encrypted one and the CD-ROM, gone.
    await driver.hotplug(
      cfgWith([volume('data'), vault(), installer(), volume('hot')]),
      'h2',
      undefined,
      secrets,
    );
    await waitDevice('hot', true);
    expect((await driver.config(VM))?.disks.map((d) => d.name)).toEqual([
      'data',
      'vault',
      'installer',
      'hot',
    ]);
    await driver.hotplug(cfgWith([volume('data')]), 'h3');
    await waitDevice('hot', false);
    await waitDevice('vault', false);
    expect((await driver.openDisks(VM)).map((o) => o.disk)).toEqual(['data']);

    // Online resize: the guest sees the new size (512-byte sectors); shrinking is refused.
    const sectors = () => sh(`cat /sys/block/${data.slice(5)}/size`);
    expect(Number(await sectors())).toBe((16 * MiB) / 512);
    await driver.resizeDisk(VM, 'data', 32);
    const deadline = Date.now() + 10_000;
    while (Number(await sectors()) !== (32 * MiB) / 512 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200));
    expect(Number(await sectors())).toBe((32 * MiB) / 512);
    await expect(driver.resizeDisk(VM, 'data', 16)).rejects.toThrow(/can only grow/);

    // Snapshots: disks only (one QMP transaction), then with RAM; data written after each is gone after rollback.
    await write(data, 0, 'before-s1');
    await driver.snapshot(VM, 's1', { memory: false });
    await write(data, 1, 'before-s2');
    await driver.snapshot(VM, 's2', { memory: true });
    await write(data, 2, 'after-s2');
    expect((await driver.snapshots(VM)).map((s) => [s.name, (s.vmStateBytes ?? 0) > 0])).toEqual([
      ['s1', false],
      ['s2', true],
    ]);
    // A disks-only snapshot cannot roll back under a running guest.
    await expect(driver.rollback(VM, 's1')).rejects.toThrow(/stop the VM first/);
    await driver.rollback(VM, 's2'); // RAM and disks, the guest keeps running from that instant
    await driver.waitForGuestAgent(VM);
    expect(await read(data, 0, 9)).toBe('before-s1');
    expect(await read(data, 1, 9)).toBe('before-s2');
    expect(await read(data, 2, 8)).not.toBe('after-s2');

    await driver.stop(VM, { force: true });
    await driver.rollback(VM, 's1'); // stopped: qemu-img on each disk
    await driver.deleteSnapshot(VM, 's2');
    expect((await driver.snapshots(VM)).map((s) => s.name)).toEqual(['s1']);
    await driver.start(VM);
    await driver.waitForGuestAgent(VM);
    const again = await waitDevice('data', true);
    expect(await read(again, 0, 9)).toBe('before-s1');
    expect(await read(again, 1, 9)).not.toBe('before-s2');
  });

  it('boots a VM from a pool volume: the root opened through a descriptor, boot index 0, no kernel or overlay', async () => {
    const name = 'vltest-stq2';
    const root = join(poolDir, 'stq2-root.qcow2');
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', root, '16M']);
    const cfg: VmConfig = {
      ...cfgWith([]),
      name,
      nics: [],
      image: { kind: 'volume', pool: 'local', volume: 'stq2-root', clone: false },
      rootSource: { kind: 'file', pool: 'local', volume: 'stq2-root', path: root, format: 'qcow2' },
    };
    try {
      await driver.create(cfg, 'r1');
      await driver.start(name);
      // An empty volume boots nothing (the firmware says so), but QEMU runs with it as its boot disk.
      expect((await driver.list()).find((v) => v.name === name)?.state).toBe('running');
      expect(await driver.openDisks(name)).toEqual([{ disk: 'root', target: root, readOnly: false }]);
      const { argv } = JSON.parse(await readFile(join(stateDir, 'vms', name, 'config.json'), 'utf8')) as {
        argv: string[];
      };
      expect(argv).toContain('-S');
      expect(argv).not.toContain('-kernel');
      expect(argv.join(' ')).not.toContain(root); // the volume reaches QEMU as a descriptor, not by its path
    } finally {
      await driver.delete(name).catch(() => {});
    }
  });

  it.runIf(existsSync('/usr/sbin/tgtd'))(
    'logs in to an iSCSI LUN with CHAP, the password over QMP only; a wrong one is refused and nothing runs',
    async () => {
      const name = 'vltest-stq3';
      const tgtPort = 913; // tgtd control socket of this test (tgtadm -C)
      const iqn = 'iqn.2026-12.io.vmlink:stq.san.lun';
      const password = 'chap-pw-7f3a9e61c2';
      const lunFile = join(poolDir, 'lun.img');
      await runner.run(['truncate', '-s', '16M', lunFile]);
      await runner.run(['ip', '-n', NS, 'link', 'set', 'lo', 'up']);
      const tgtd = await runner.spawnDetached(
        ['tgtd', '-f', '-C', String(tgtPort), '--iscsi', 'portal=127.0.0.1:3260'],
        {
          netns: NS,
        },
      );
      const tgtadm = (...a: string[]) =>
        runner.run(['tgtadm', '-C', String(tgtPort), '--lld', 'iscsi', ...a]);
      const chap = (secret: string) => [{ name: 'san-chap', value: Buffer.from(secret).toString('base64') }];
      const cfg: VmConfig = {
        ...cfgWith([
          {
            name: 'lun',
            source: {
              kind: 'iscsi',
              pool: 'san',
              volume: 'lun',
              portal: '127.0.0.1:3260',
              iqn,
              lun: 1,
              chap: { user: 'vmlink', secret: 'san-chap' },
            },
          },
        ]),
        name,
        nics: [],
      };
      try {
        for (let i = 0; ; i++) {
          const r = await runner.run(
            ['tgtadm', '-C', String(tgtPort), '--lld', 'iscsi', '--op', 'show', '--mode', 'sys'],
            {
              allowFailure: true,
            },
          );
          if (r.code === 0) break;
          if (i > 50) throw new Error(`tgtd did not come up: ${r.stderr}`);
          await new Promise((r2) => setTimeout(r2, 100));
        }
        await tgtadm('--op', 'new', '--mode', 'target', '--tid', '1', '-T', iqn);
        await tgtadm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '1', '-b', lunFile);
        await tgtadm('--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL');
        // tgtadm takes the password as an argument: this test's own stand-in for the storage agent.
        await tgtadm('--op', 'new', '--mode', 'account', '--user', 'vmlink', '--password', password);
        await tgtadm('--op', 'bind', '--mode', 'account', '--tid', '1', '--user', 'vmlink');

        await driver.create(cfg, 'i1');
        const wrong = await driver
          .start(name, undefined, chap('not-the-password'))
          .catch((e: unknown) => e as Error);
        expect(String(wrong)).toMatch(/disk lun could not be attached: .*Authentication failure/);
        expect(String(wrong)).not.toContain('not-the-password');
        expect((await driver.list()).find((v) => v.name === name)?.state).toBe('stopped');

        await driver.start(name, undefined, chap(password));
        expect(await driver.openDisks(name)).toEqual([
          { disk: 'lun', target: `iscsi://127.0.0.1:3260/${iqn}/1`, readOnly: false },
        ]);
        const pid = (await readFile(join(stateDir, 'vms', name, 'run/qemu.pid'), 'utf8')).trim();
        for (const where of [
          await readFile(`/proc/${pid}/cmdline`, 'utf8'),
          await readFile(join(stateDir, 'vms', name, 'config.json'), 'utf8'),
          await readFile(join(stateDir, 'vms', name, 'qemu.log'), 'utf8').catch(() => ''),
        ]) {
          expect(where).not.toContain(password);
          expect(where).not.toContain(chap(password)[0]!.value);
        }
        // A raw LUN cannot take a VM snapshot: refused, naming the disk.
        await expect(driver.snapshot(name, 's1', { memory: false })).rejects.toThrow(
          /iSCSI LUN, which cannot snapshot/,
        );
      } finally {
        await driver.delete(name).catch(() => {});
        process.kill(tgtd, 'SIGKILL');
        await runner.run([
          'sh',
          '-c',
          `rm -f /var/run/tgtd/socket.${tgtPort} /var/run/tgtd/socket.${tgtPort}.lock`,
        ]);
      }
    },
  );
});
