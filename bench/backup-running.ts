// A RUNNING VM's backup (how users back one up: `vmlink backup run VM`) beside the same disk's backup once the VM is
// stopped, in one run, both through the QEMU driver as the agent calls it: running, QEMU's own persistent dirty
// bitmap, fleecing and NBD export (one QMP transaction, no process started); stopped, one qemu-storage-daemon. The
// pipeline (ids, zstd, AES-256-GCM, store) is the agent's, into a local DirChunkStore. The test guest (TCG, 256 MiB,
// no NIC) gets a data disk filled like bench/backup.ts's image; each 1 % round is random 1 MiB writes (1 % of the
// disk): by the guest (dd from /dev/urandom, fsynced) while it runs, by qemu-io once it is stopped.
//   flock /tmp/vmlink-bench.lock flock /tmp/vmlink-int.lock flock /tmp/vmlink-vm.lock \
//     npx tsx bench/backup-running.ts [--size 1024M] [--rounds 3]
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { backupDisks } from '../src/agent/backup/pipeline.js';
import { SealThreads } from '../src/agent/backup/seal-workers.js';
import { DirChunkStore } from '../src/drivers/backup/chunk-store.js';
import { connectNbd } from '../src/drivers/backup/nbd-client.js';
import { QemuDriver } from '../src/drivers/hypervisor/qemu/driver.js';
import { SystemRunner } from '../src/exec/runner.js';
import { type Manifest, manifestVersionFor, snapshotId } from '../src/shared/backup.js';
import { BackupKeySet, newBackupKey } from '../src/shared/backup-crypto.js';
import type { VmConfig } from '../src/shared/model.js';
import { applyChange, makeImage } from './backup-image.js';
import { cpuMs } from './backup-tools.js';
import { sleep } from './lib.js';

const MiB = 1024 * 1024;
const VM = 'bkf-run1';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { size: { type: 'string', default: '1024M' }, rounds: { type: 'string', default: '3' } },
  });
  const size = Number(/^(\d+)M$/.exec(values.size)?.[1] ?? Number.NaN) * MiB;
  if (!Number.isSafeInteger(size) || size % (4 * MiB) !== 0) throw new Error('--size: e.g. 1024M');
  const rounds = Number(values.rounds);
  const root = mkdtempSync('/tmp/bkf-bench-running-');
  chmodSync(root, 0o711);
  const runner = new SystemRunner();
  const driver = new QemuDriver({ runner, stateDir: join(root, 'state'), accelerator: 'tcg' });
  const threads = new SealThreads();
  const keys = BackupKeySet.fromKey(newBackupKey(), 'bench key');
  try {
    const cfg: VmConfig = {
      name: VM,
      cpus: 1,
      memoryMiB: 256,
      image: { kind: 'test-guest' },
      disks: [{ name: 'data', sizeMiB: size / MiB }],
      nics: [],
      state: 'running',
    };
    await driver.create(cfg, 'bkf-h1');
    // The data disk holds the bench image's data (written into the driver's own file: its owner and mode stay).
    const raw = join(root, 'disk.raw');
    const made = join(root, 'made.qcow2');
    makeImage(raw, made, size);
    const disk = join(root, 'state', 'vms', VM, 'disk-data.qcow2');
    execFileSync('qemu-img', ['convert', '-n', '--target-is-zero', '-f', 'qcow2', '-O', 'qcow2', made, disk]);
    rmSync(made);
    await driver.start(VM);
    await driver.waitForGuestAgent(VM, 600_000);
    const dev = (
      await driver.guestExec(VM, [
        'sh',
        '-c',
        'for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = data ] && echo /dev/$(basename $d); done',
      ])
    ).stdout.trim();
    if (!/^\/dev\/vd[a-z]$/.test(dev)) throw new Error(`no data disk in the guest (${dev})`);
    const store = await DirChunkStore.open({ name: 'bench', path: join(root, 'store'), offsite: false });
    await (await threads.codecFor(keys)).close();
    let base: Manifest | undefined;
    let n = 0;
    const count = Math.max(1, Math.round(size / 100 / MiB));
    const backup = async (label: string) => {
      if (base) while (snapshotId(VM, new Date()) === base.id) await sleep(50);
      const next = `vmlink-bench-2026120${n++}T000000Z`;
      const baseBitmap = base ? `vmlink-bench-2026120${n - 2}T000000Z` : undefined;
      const t0 = performance.now();
      const c0 = cpuMs();
      const view = await driver.backupOpen!(VM, {
        bitmaps: { ...(baseBitmap ? { base: baseBitmap } : {}), next },
        freeze: false,
        full: false,
      });
      const tOpen = performance.now();
      const codec = await threads.codecFor(keys);
      const disks = await backupDisks(view, base, keys, store, connectNbd, undefined, undefined, codec)
        .catch(async (e) => {
          await view.abort();
          throw e;
        })
        .finally(() => codec.close());
      const tPipe = performance.now();
      const unsigned: Omit<Manifest, 'signature'> = {
        version: manifestVersionFor(disks),
        id: snapshotId(VM, view.at),
        vm: VM,
        host: 'bench',
        policy: 'manual',
        createdAt: view.at.toISOString(),
        finishedAt: new Date().toISOString(),
        ...(base ? { base: base.id } : {}),
        consistency: view.consistency,
        keyFingerprint: keys.fingerprint,
        disks,
        config: keys.sealConfig({ name: VM, label }),
      };
      const manifest: Manifest = { ...unsigned, signature: keys.signManifest(unsigned) };
      await store.putManifest(manifest);
      await view.commit();
      const t1 = performance.now();
      base = manifest;
      const d = disks[0]!;
      console.log(
        `${label.padEnd(16)} ${((t1 - t0) / 1000).toFixed(2)} s (cpu ${((cpuMs() - c0) / 1000).toFixed(2)} s)  read ${(d.readBytes / MiB).toFixed(0)} MiB, ${d.newChunks} new chunks, ${d.mode}${d.fullReason ? ` (${d.fullReason})` : ''}; open ${Math.round(tOpen - t0)} ms, pipeline ${Math.round(tPipe - tOpen)} ms, manifest + end ${Math.round(t1 - tPipe)} ms`,
      );
    };
    let seed = 3000;
    await backup('running full');
    for (let r = 1; r <= rounds; r++) {
      // Twenty 1 MiB writes at 2 GiB (1 %), at random MiB offsets, fsynced by the guest.
      const offs = Array.from({ length: count }, () => Math.floor(Math.random() * (size / MiB - 1)));
      const w = await driver.guestExec(VM, [
        'sh',
        '-c',
        `for o in ${offs.join(' ')}; do dd if=/dev/urandom of=${dev} bs=1M count=1 seek=$o conv=notrunc,fsync 2>/dev/null || exit 1; done`,
      ]);
      if (w.exitCode !== 0) throw new Error(`guest writes failed: ${w.stdout}${w.stderr}`);
      await backup(`running 1% #${r}`);
    }
    await driver.stop(VM, { force: false, timeoutMs: 60_000 });
    for (let r = 1; r <= rounds; r++) {
      applyChange(root, { qcow2: disk, raw }, { name: '1%', count, bytes: MiB }, seed++, size);
      await backup(`stopped 1% #${r}`);
    }
  } finally {
    await driver.delete(VM).catch((e: Error) => console.error(`delete: ${e.message}`));
    await driver.close();
    await threads.close();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? String(e));
  process.exit(1);
});
