import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuDriver } from '../../src/drivers/hypervisor/qemu/driver.js';
import { defaultLauncherPath } from '../../src/drivers/hypervisor/qemu/launcher.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { DiskConfig, VmConfig } from '../../src/shared/model.js';
import { acquireVmLock } from '../helpers/vmlock.js';

// `move-disk` on real QEMU (qemu/move-disk.ts): one booted test guest with a 32 MiB volume in dir pool A; the disk
// is mirrored to a new volume in pool B and pivoted while the guest runs (same QEMU process), the data written
// before the move reads back after it, the old volume is gone, a restart opens the new volume, and the disk moves
// back to A (the slot's first set of node names again). A move into a volume that exists is refused, nothing changed.
// Then, the VM stopped, the disk is copied to B and the next start opens the copy.

const runner = new SystemRunner();
const VM = 'mgb-mvdisk1';
const GUEST_DIR = '/var/lib/vmlink/images/test-guest';
const BEFORE = 'mgb-before-move-5d1c';
const AFTER = 'mgb-after-move-77a0';
const isRoot = process.getuid?.() === 0;

describe.runIf(isRoot && existsSync(`${GUEST_DIR}/vmlinuz`))('vm move-disk on real QEMU', () => {
  let release: (() => Promise<void>) | undefined;
  let stateDir = '';
  let top = '';
  let poolA = '';
  let poolB = '';
  let driver: QemuDriver;

  const cfg = (disks: DiskConfig[]): VmConfig => ({
    name: VM,
    cpus: 1,
    memoryMiB: 128,
    image: { kind: 'test-guest' },
    disks,
    nics: [],
    state: 'running',
  });
  const sh = async (script: string) => {
    const r = await driver.guestExec(VM, ['sh', '-c', script], { timeoutMs: 30_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    return r.stdout.trim();
  };
  const deviceOf = async (serial: string) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const dev = await sh(
        `for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = ${serial} ] && echo /dev/$(basename $d); done; true`,
      );
      if (dev) return dev;
      if (Date.now() > deadline) throw new Error(`disk ${serial} never appeared`);
      await new Promise((r) => setTimeout(r, 300));
    }
  };
  const write = (dev: string, at: number, text: string) =>
    sh(`printf %s ${text} | dd of=${dev} bs=1M seek=${at} conv=notrunc,fsync 2>/dev/null; sync`);
  const read = (dev: string, at: number, n: number) =>
    sh(`echo 3 > /proc/sys/vm/drop_caches; dd if=${dev} bs=1M skip=${at} count=1 2>/dev/null | head -c ${n}`);
  const pid = async () => (await driver.list()).find((v) => v.name === VM)?.pid;

  beforeAll(async () => {
    if (!existsSync(defaultLauncherPath())) await runner.run(['bash', 'scripts/build-native.sh']);
    release = await acquireVmLock();
    stateDir = await mkdtemp(join(tmpdir(), 'vmlink-mgb-int-'));
    await chmod(stateDir, 0o711);
    // Pools are root's alone: the VM's uid only ever gets descriptors.
    top = await mkdtemp(join(tmpdir(), 'vmlink-mgb-pools-'));
    poolA = join(top, 'a');
    poolB = join(top, 'b');
    for (const p of [poolA, poolB]) await mkdir(p, { mode: 0o700 });
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', join(poolA, 'data.qcow2'), '32M']);
    driver = new QemuDriver({ runner, stateDir });
  });

  afterAll(async () => {
    try {
      if (driver) await driver.delete(VM).catch(() => {});
      await driver?.close();
    } finally {
      if (stateDir) await rm(stateDir, { recursive: true, force: true });
      if (top) await rm(top, { recursive: true, force: true });
      await release?.();
    }
  });

  it('moves a running disk between pools: same QEMU, data intact, old volume gone, restart opens the new one', async () => {
    const data: DiskConfig = {
      name: 'data',
      source: { kind: 'file', pool: 'a', volume: 'data', path: join(poolA, 'data.qcow2'), format: 'qcow2' },
    };
    await driver.create(cfg([data]), 'h1');
    await driver.start(VM);
    await driver.waitForGuestAgent(VM);
    let dev = await deviceOf('data');
    await write(dev, 3, BEFORE);
    const before = await pid();
    expect(before).toBeGreaterThan(0);

    // A volume of that name in the target pool is someone's: refused before anything is made.
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', join(poolB, 'taken.qcow2'), '1M']);
    await expect(driver.moveDisk(VM, 'data', { pool: 'b', dir: poolB, volume: 'taken' })).rejects.toThrow(
      /volume taken exists in pool b/,
    );
    await expect(driver.moveDisk(VM, 'nope', { pool: 'b', dir: poolB, volume: 'x' })).rejects.toThrow(/nope/);

    const copies: number[] = [];
    const moved = await driver.moveDisk(
      VM,
      'data',
      { pool: 'b', dir: poolB, volume: 'mgb-data' },
      { onCopy: (p) => copies.push(p.doneBytes) },
    );
    expect(moved.to).toMatchObject({ kind: 'file', pool: 'b', path: join(poolB, 'mgb-data.qcow2') });
    expect(copies.length).toBeGreaterThan(0);
    // The same QEMU process, the guest never stopped; its data is there and new writes land in pool B.
    expect(await pid()).toBe(before);
    expect(await read(dev, 3, BEFORE.length)).toBe(BEFORE);
    await write(dev, 5, AFTER);
    expect(existsSync(join(poolA, 'data.qcow2'))).toBe(false);
    expect((await driver.openDisks(VM)).map((o) => [o.disk, o.target])).toEqual([
      ['data', join(poolB, 'mgb-data.qcow2')],
    ]);
    const stored = JSON.parse(await readFile(join(stateDir, 'vms', VM, 'config.json'), 'utf8'));
    expect(stored.config.disks[0].source.path).toBe(join(poolB, 'mgb-data.qcow2'));

    // A restart opens the new volume (the slot's other node names, same port and serial).
    await driver.stop(VM, { force: true });
    await driver.start(VM);
    await driver.waitForGuestAgent(VM);
    dev = await deviceOf('data');
    expect(await read(dev, 3, BEFORE.length)).toBe(BEFORE);
    expect(await read(dev, 5, AFTER.length)).toBe(AFTER);

    // And back to pool A: the first node names again; the data still there.
    const back = await driver.moveDisk(VM, 'data', { pool: 'a', dir: poolA, volume: 'data2' });
    expect(back.to).toMatchObject({ pool: 'a' });
    expect(await read(dev, 5, AFTER.length)).toBe(AFTER);
    expect(existsSync(join(poolB, 'mgb-data.qcow2'))).toBe(false);
    expect((await driver.openDisks(VM)).map((o) => o.target)).toEqual([join(poolA, 'data2.qcow2')]);
  });

  it('moves a stopped disk by a copy: the next start opens it, the data intact, the old volume gone', async () => {
    await driver.stop(VM, { force: true });
    const moved = await driver.moveDisk(VM, 'data', { pool: 'b', dir: poolB, volume: 'mgb-data3' });
    expect(moved).toMatchObject({ from: 'pool a', to: { pool: 'b', path: join(poolB, 'mgb-data3.qcow2') } });
    expect(existsSync(join(poolA, 'data2.qcow2'))).toBe(false);
    await driver.start(VM);
    await driver.waitForGuestAgent(VM);
    const dev = await deviceOf('data');
    expect(await read(dev, 3, BEFORE.length)).toBe(BEFORE);
    expect(await read(dev, 5, AFTER.length)).toBe(AFTER);
    expect((await driver.openDisks(VM)).map((o) => o.target)).toEqual([join(poolB, 'mgb-data3.qcow2')]);
  });
});
