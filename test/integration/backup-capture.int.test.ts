import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuDriver } from '../../src/drivers/hypervisor/qemu/driver.js';
import { defaultLauncherPath } from '../../src/drivers/hypervisor/qemu/launcher.js';
import type { QmpClient } from '../../src/drivers/hypervisor/qemu/qmp.js';
import type { BackupView } from '../../src/drivers/hypervisor/types.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { VmConfig } from '../../src/shared/model.js';
import { createBridgedTaps } from '../helpers/guest-net.js';
import { acquireVmLock } from '../helpers/vmlock.js';

// A running test guest with a qcow2 data disk, backed up through the QEMU driver: the view is a point in time (the
// guest's later writes do not show through the export), the base bitmap's dirty extents are exactly what the guest
// wrote since the base, an abort keeps them counting, and an agent that dies mid-view leaves nothing behind once
// the next agent adopts the VM (backupCleanup) — the next backup is incremental and complete. The export is read
// with qemu-img (convert, and map with x-dirty-bitmap: dirty extents show as data:false).

const runner = new SystemRunner();
const NS = 'vltest-bkcap';
const BRIDGE = 'vltest-bkcapbr';
const TAP = 'vlt-bkcap0001';
const VM = 'vltest-bkcap1';
const GUEST_DIR = '/var/lib/vmlink/images/test-guest';
const MiB = 1024 * 1024;
const KiB64 = 64 * 1024;
const B = (n: number) => `vmlink-capture-2026120${n}T120000Z`;

const cfg: VmConfig = {
  name: VM,
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks: [
    { name: 'data', sizeMiB: 16 },
    { name: 'vault', sizeMiB: 16, encryption: { secret: 'vault-key' } },
  ],
  nics: [{ network: 'n', backend: 'linux', bridge: BRIDGE, tap: TAP, mac: '52:54:00:96:00:02', mtu: 1500 }],
  state: 'running',
};

const secrets = [{ name: 'vault-key', value: Buffer.from('bkcap vault passphrase 5e1d').toString('base64') }];
const VAULT_OLD = 'vmlink-vault-plaintext-old-7c1f';

const isRoot = process.getuid?.() === 0;

interface NamedNode {
  'node-name': string;
  'dirty-bitmaps'?: Array<{ name?: string; recording: boolean; busy: boolean }>;
}

describe.runIf(isRoot && existsSync(`${GUEST_DIR}/vmlinuz`))('backup capture on real QEMU 7.2', () => {
  let release: (() => Promise<void>) | undefined;
  let stateDir = '';
  let driver: QemuDriver;
  const timings: Record<string, number> = {};
  let dev = '';
  let vaultDev = '';
  /** The guest's device of the disk whose virtio serial is `serial`. */
  const guestDevice = async (serial: string) =>
    (
      await driver.guestExec(VM, [
        'sh',
        '-c',
        `for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = ${serial} ] && echo /dev/$(basename $d); done`,
      ])
    ).stdout.trim();
  let work = '';

  const vmDir = () => join(stateDir, 'vms', VM);
  // The driver's own shared QMP connection (QEMU's monitor takes one client): its private accessors (vm-accessors.ts).
  const qmp = () => (driver as unknown as { vms: { qmp(n: string): Promise<QmpClient> } }).vms.qmp(VM);
  const nodes = async () =>
    (await (await qmp()).execute<NamedNode[]>('query-named-block-nodes', { flat: true })).filter(
      (n) => !n['node-name'].startsWith('#'),
    );
  /** The data disk's bitmaps: name -> recording. */
  const bitmaps = async () => {
    const n = (await nodes()).find((x) => x['node-name'] === 'disk0');
    // The fleecing job's own copy bitmap has no name.
    return Object.fromEntries(
      (n?.['dirty-bitmaps'] ?? []).filter((b) => b.name !== undefined).map((b) => [b.name, b.recording]),
    );
  };
  /** Everything a view adds to QEMU and the VM's directory, which must be gone after each view. */
  const leftovers = async () => {
    const q = await qmp();
    return {
      nodes: (await nodes()).map((n) => n['node-name']).filter((n) => n.startsWith('vmlink-')),
      exports: await q.execute<unknown[]>('query-block-exports'),
      jobs: await q.execute<unknown[]>('query-block-jobs'),
      record: existsSync(join(vmDir(), 'backup-view.json')),
      overlay: existsSync(join(vmDir(), 'backup-fleece-disk0.qcow2')),
    };
  };
  const clean = { nodes: [], exports: [], jobs: [], record: false, overlay: false };

  /** The guest writes `text` at `offset` of the data disk, synchronously. */
  const guestWrite = async (offset: number, text: string, to = dev) => {
    const r = await driver.guestExec(VM, [
      'sh',
      '-c',
      `printf %s ${text} | dd of=${to} bs=1 seek=${offset} conv=notrunc,fsync 2>&1`,
    ]);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
  };
  /** The export's bytes at `offset` (the whole disk read through NBD into a file). */
  const exportBytes = async (v: BackupView, offset: number, length: number, disk = 'data') => {
    const d = v.disks.find((x) => x.name === disk)!;
    const out = join(work, `export-${Date.now()}.raw`);
    await runner.run([
      'qemu-img',
      'convert',
      '-f',
      'raw',
      '-O',
      'raw',
      `nbd+unix:///${d.exportName}?socket=${d.socket}`,
      out,
    ]);
    const buf = await readFile(out);
    await rm(out);
    return buf.subarray(offset, offset + length).toString('latin1');
  };
  /** The dirty extents of the view's base bitmap, as [offset, length] pairs. */
  const dirty = async (v: BackupView) => {
    const d = v.disks.find((x) => x.name === 'data')!;
    if (!('context' in d.changed)) throw new Error(`data reads whole: ${JSON.stringify(d.changed)}`);
    const r = await runner.run([
      'qemu-img',
      'map',
      '--output=json',
      '--image-opts',
      `driver=nbd,export=${d.exportName},server.type=unix,server.path=${d.socket},x-dirty-bitmap=${d.changed.context}`,
    ]);
    return (JSON.parse(r.stdout) as Array<{ start: number; length: number; data: boolean }>)
      .filter((e) => !e.data)
      .map((e) => [e.start, e.length]);
  };

  beforeAll(async () => {
    if (!existsSync(defaultLauncherPath())) await runner.run(['bash', 'scripts/build-native.sh']);
    release = await acquireVmLock();
    await createBridgedTaps(runner, NS, BRIDGE, [TAP]);
    stateDir = await mkdtemp(join(tmpdir(), 'vmlink-bkcap-int-'));
    work = await mkdtemp(join(tmpdir(), 'vmlink-bkcap-work-'));
    await chmod(stateDir, 0o711);
    driver = new QemuDriver({ runner, stateDir, netns: NS });
    await driver.create(cfg, 'bkcap-h1', undefined, secrets);
    await driver.start(VM, undefined, secrets);
    await driver.waitForGuestAgent(VM, 240_000);
    dev = await guestDevice('data');
    vaultDev = await guestDevice('vault');
    expect(dev).toMatch(/^\/dev\/vd[a-z]$/);
    expect(vaultDev).toMatch(/^\/dev\/vd[a-z]$/);
  }, 900_000);

  afterAll(async () => {
    try {
      if (driver) await driver.delete(VM).catch(() => {});
      await driver?.close();
    } finally {
      await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
      if (stateDir) await rm(stateDir, { recursive: true, force: true });
      if (work) await rm(work, { recursive: true, force: true });
      await release?.();
      console.log('backup capture timings (ms):', JSON.stringify(timings));
    }
  });

  it('a first backup is a point in time: later guest writes do not show through the export', async () => {
    await guestWrite(1 * MiB, 'OLD-AAAA');
    await guestWrite(5 * MiB, 'OLD-BBBB');
    const t0 = Date.now();
    const v = await driver.backupOpen!(VM, { bitmaps: { next: B(1) }, freeze: true, full: false });
    timings.openFrozen = Date.now() - t0;
    console.log('first view:', v.consistency, v.consistencyNote ?? '');
    expect(['frozen', 'crash-consistent']).toContain(v.consistency);
    expect(v.disks).toEqual([
      expect.objectContaining({
        name: 'data',
        sizeBytes: 16 * MiB,
        exportName: 'data',
        changed: { fullReason: 'first' },
      }),
      expect.objectContaining({ name: 'vault', exportName: 'vault', changed: { fullReason: 'first' } }),
    ]);
    // A second view of the same VM is refused while this one is open.
    await expect(
      driver.backupOpen!(VM, { bitmaps: { next: B(9) }, freeze: false, full: false }),
    ).rejects.toThrow(/already has a backup or restore view open/);
    await guestWrite(1 * MiB, 'NEW-AAAA');
    expect(await exportBytes(v, 1 * MiB, 8)).toBe('OLD-AAAA');
    expect(await exportBytes(v, 5 * MiB, 8)).toBe('OLD-BBBB');
    expect(await bitmaps()).toEqual({ [B(1)]: true });
    await v.commit();
    expect(await leftovers()).toEqual(clean);
    expect(await bitmaps()).toEqual({ [B(1)]: true });
  }, 180_000);

  it('the next backup reads exactly what changed since the base; an abort keeps it counting', async () => {
    await guestWrite(3 * MiB, 'NEW-CCCC');
    await guestWrite(8 * MiB + 100, 'NEW-DDDD');
    let t0 = Date.now();
    const v = await driver.backupOpen!(VM, {
      bitmaps: { base: B(1), next: B(2) },
      freeze: false,
      full: false,
    });
    timings.openTwoDisks = Date.now() - t0;
    expect(v.disks[0]!.changed).toEqual({ context: `qemu:dirty-bitmap:${B(1)}` });
    // The guest's write at 1 MiB came after the first cut: B(1) has it, with the two since.
    expect(await dirty(v)).toEqual([
      [1 * MiB, KiB64],
      [3 * MiB, KiB64],
      [8 * MiB, KiB64],
    ]);
    expect(await exportBytes(v, 1 * MiB, 8)).toBe('NEW-AAAA');
    await guestWrite(12 * MiB, 'NEW-EEEE'); // after this cut: counted by B(2) only, until the abort folds it back
    expect(await bitmaps()).toEqual({ [B(1)]: false, [B(2)]: true });
    t0 = Date.now();
    await v.abort();
    timings.abort = Date.now() - t0;
    expect(await leftovers()).toEqual(clean);
    expect(await bitmaps()).toEqual({ [B(1)]: true });
    const again = await driver.backupOpen!(VM, {
      bitmaps: { base: B(1), next: B(3) },
      freeze: false,
      full: false,
    });
    expect(await dirty(again)).toEqual([
      [1 * MiB, KiB64],
      [3 * MiB, KiB64],
      [8 * MiB, KiB64],
      [12 * MiB, KiB64],
    ]);
    t0 = Date.now();
    await again.commit();
    timings.commit = Date.now() - t0;
    expect(await bitmaps()).toEqual({ [B(3)]: true });
    expect(await leftovers()).toEqual(clean);
  }, 180_000);

  it('an agent that dies mid-view: the next agent cleans up on adopt and the next backup is complete', async () => {
    await guestWrite(2 * MiB, 'NEW-FFFF');
    const v = await driver.backupOpen!(VM, {
      bitmaps: { base: B(3), next: B(4) },
      freeze: true,
      full: false,
    });
    expect(await dirty(v)).toEqual([[2 * MiB, KiB64]]);
    await guestWrite(6 * MiB, 'NEW-GGGG'); // after the cut: in B(4) only
    // The agent dies: its view object is dropped, its QMP connection closed.
    expect((await leftovers()).nodes.length).toBeGreaterThan(0);
    await driver.close(); // QEMU's monitor takes one client: the dead agent's connection goes first
    driver = new QemuDriver({ runner, stateDir, netns: NS });
    expect((await leftovers()).record).toBe(true);
    const t0 = Date.now();
    await driver.adopt();
    timings.adoptWithCleanup = Date.now() - t0;
    expect(await leftovers()).toEqual(clean);
    expect(await bitmaps()).toEqual({ [B(3)]: true });
    await driver.backupCleanup!(VM); // idempotent
    const next = await driver.backupOpen!(VM, {
      bitmaps: { base: B(3), next: B(5) },
      freeze: false,
      full: false,
    });
    expect(await dirty(next)).toEqual([
      [2 * MiB, KiB64],
      [6 * MiB, KiB64],
    ]);
    expect(await exportBytes(next, 6 * MiB, 8)).toBe('NEW-GGGG');
    await next.commit();
    expect(await leftovers()).toEqual(clean);
  }, 180_000);

  it("an encrypted disk's fleece holds its old blocks encrypted: the export reads them, the host file does not show them", async () => {
    await guestWrite(4 * MiB, VAULT_OLD, vaultDev);
    const v = await driver.backupOpen!(VM, {
      bitmaps: { base: B(5), next: B(6) },
      freeze: false,
      full: false,
    });
    // The guest overwrites it: the old block goes to the fleece (copy-before-write).
    await guestWrite(4 * MiB, 'vmlink-vault-overwritten-new-0000', vaultDev);
    expect(await exportBytes(v, 4 * MiB, VAULT_OLD.length, 'vault')).toBe(VAULT_OLD);
    const overlay = await readFile(join(vmDir(), 'backup-fleece-disk1.qcow2'));
    expect(overlay.length).toBeGreaterThan(64 * 1024); // the copied cluster is in it
    expect(overlay.includes(Buffer.from(VAULT_OLD))).toBe(false);
    await v.commit();
    expect(await leftovers()).toEqual(clean);
    expect(existsSync(join(vmDir(), 'backup-fleece-disk1.qcow2'))).toBe(false);
  }, 180_000);

  it('refuses a restore view of a running VM', async () => {
    await expect(driver.restoreOpen!(VM)).rejects.toThrow(
      /restore requires stopped: VM vltest-bkcap1 is running/,
    );
  });

  it('a stopped VM with an encrypted disk: backup and restore views are refused, nothing left behind', async () => {
    await driver.stop(VM, { force: false, timeoutMs: 20_000 });
    const opts = { bitmaps: { base: B(6), next: B(7) }, freeze: true, full: false };
    await expect(driver.backupOpen!(VM, opts)).rejects.toThrow(/disk vault is encrypted/);
    await expect(driver.restoreOpen!(VM)).rejects.toThrow(/disk vault is encrypted/);
    expect(existsSync(join(vmDir(), 'backup-view.json'))).toBe(false);
  }, 180_000);
});
