// vmlink's side of bench/backup.ts: the parts a backup of a stopped VM's disk runs through on its host, in this
// process: one qemu-storage-daemon opening the qcow2 (the driver's openDaemon, as the agent runs it: the next
// snapshot's bitmap added, the image exported read-only with the base bitmap, and at the end the base removed and the
// bitmaps written as it quits), the agent's pipeline (backupDisks: block status of `base:allocation` and of the dirty
// bitmap, chunks (1 MiB for new chains, or `chunkBytes`) read over NBD, ids, zstd + AES-256-GCM, only missing chunks stored) into a DirChunkStore in a
// local directory, then the signed manifest. Restore: a fresh qcow2 exported writable by qemu-nbd, restoreDisks
// (fetch, decrypt, check, write; zero chunks as write-zeroes).
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { askBaseChunks, backupDisks, restoreDisks } from '../src/agent/backup/pipeline.js';
import { SealThreads } from '../src/agent/backup/seal-workers.js';
import { DirChunkStore } from '../src/drivers/backup/chunk-store.js';
import { connectNbd } from '../src/drivers/backup/nbd-client.js';
import { startQemuNbd, stopQemuNbd } from '../src/drivers/backup/qemu-nbd.js';
import { type DaemonDeps, openDaemon, SPARE_DIR_NAME } from '../src/drivers/hypervisor/qemu/backup-daemon.js';
import { writeViewRecordFile } from '../src/drivers/hypervisor/qemu/backup-disks.js';
import { SpareDaemon } from '../src/drivers/hypervisor/qemu/backup-spare.js';
import { SystemRunner } from '../src/exec/runner.js';
import {
  BACKUP_CHUNK_BYTES_NEW,
  type Manifest,
  manifestVersionFor,
  snapshotId,
} from '../src/shared/backup.js';
import { BackupKeySet, newBackupKey } from '../src/shared/backup-crypto.js';
import type { BackupFigures, BackupTool, RestoreFigures } from './backup-tools.js';
import { cpuMs, duBytes } from './backup-tools.js';
import { sleep } from './lib.js';

const VM = 'bench';
const DISK = 'root';

export class Vmlink implements BackupTool {
  readonly name = 'vmlink';
  private readonly runner = new SystemRunner();
  private readonly keys = BackupKeySet.fromKey(newBackupKey(), 'bench key');
  /** The agent's sealing threads: started once (untimed), as an agent's stay up between jobs. */
  private readonly threads = new SealThreads();
  private readonly storeDir: string;
  private readonly socketDir: string;
  /** The host's spare storage daemon, as the agent keeps it (the first round starts its own, as an agent's first). */
  private readonly spare: SpareDaemon | undefined;
  private store: DirChunkStore | undefined;
  private base: Manifest | undefined;
  private baseBitmap: string | undefined;
  private n = 0;

  constructor(
    dir: string,
    private readonly qcow2: string,
    private readonly sizeBytes: number,
    /** Where the disk is cut (A/B of chunk sizes: bench/backup-ab.ts --chunks). */
    private readonly chunkBytes = BACKUP_CHUNK_BYTES_NEW,
    /** Keep a spare storage daemon as the agent does (false: every round starts its own, as before). */
    spare = true,
  ) {
    this.storeDir = join(dir, 'vmlink-store');
    this.socketDir = join(dir, 'vmlink-run');
    this.spare = spare
      ? new SpareDaemon({ runner: this.runner, root: join(dir, SPARE_DIR_NAME) })
      : undefined;
  }

  async init(): Promise<void> {
    mkdirSync(this.socketDir, { recursive: true, mode: 0o700 });
    this.store = await DirChunkStore.open({ name: 'bench', path: this.storeDir, offsite: false });
    await (await this.threads.codecFor(this.keys)).close();
  }

  async backup(label: string): Promise<BackupFigures> {
    const store = this.store!;
    const before = duBytes(this.storeDir);
    // Snapshot ids have second precision: never two in one second.
    if (this.base) while (snapshotId(VM, new Date()) === this.base.id) await sleep(50);
    const t0 = performance.now();
    const phases: Array<[string, number, number]> = [];
    let tp = t0;
    let cp = cpuMs();
    const phase = (what: string) => {
      const now = performance.now();
      const cpu = cpuMs();
      phases.push([what, now - tp, cpu - cp]);
      tp = now;
      cp = cpu;
    };
    const next = `vmlink-bench-${this.n++}`;
    // As the agent: the base's chunks are asked about while the daemon starts.
    const baseAsked = this.base ? askBaseChunks(store, this.base) : undefined;
    // As the agent reads a stopped VM's disk: one qemu-storage-daemon adds `next`, exports the image read-only with
    // the base bitmap, and at the end removes the base and writes the bitmaps as it quits.
    const view = await openDaemon(
      this.daemonDeps(),
      [{ name: DISK, node: 'root', index: 0, qcow2: true, encrypted: false, image: this.qcow2 }],
      {
        bitmaps: { ...(this.baseBitmap ? { base: this.baseBitmap } : {}), next },
        freeze: false,
        full: false,
      },
    );
    phase('open');
    let disks: Manifest['disks'];
    const at = new Date();
    try {
      const codec = await this.threads.codecFor(this.keys);
      disks = await backupDisks(
        { consistency: 'stopped', at, disks: view.disks, commit: async () => {}, abort: async () => {} },
        this.base,
        this.keys,
        store,
        connectNbd,
        undefined,
        undefined,
        codec,
        this.chunkBytes,
        baseAsked,
      ).finally(() => codec.close());
      phase('pipeline');
    } catch (e) {
      await view.end('abort');
      throw e;
    }
    const unsigned: Omit<Manifest, 'signature'> = {
      version: manifestVersionFor(disks),
      id: snapshotId(VM, at),
      vm: VM,
      host: 'bench',
      policy: 'manual',
      createdAt: at.toISOString(),
      finishedAt: new Date().toISOString(),
      ...(this.base ? { base: this.base.id } : {}),
      consistency: 'stopped',
      keyFingerprint: this.keys.fingerprint,
      disks,
      config: this.keys.sealConfig({ name: VM, label }),
    };
    const manifest: Manifest = { ...unsigned, signature: this.keys.signManifest(unsigned) };
    await store.putManifest(manifest);
    phase('manifest');
    await view.end('commit');
    phase('end');
    this.base = manifest;
    this.baseBitmap = next;
    const ms = performance.now() - t0;
    // Untimed: the next spare is up before the next round (an agent's backups are minutes apart), so its start
    // never runs beside another round (bench/backup-ab.ts runs two sides in one process).
    await this.spare?.pid();
    const modes = [...new Set(disks.map((d) => (d.fullReason ? `${d.mode} (${d.fullReason})` : d.mode)))];
    return {
      ms,
      readBytes: disks.reduce((s, d) => s + d.readBytes, 0),
      storedBytes: duBytes(this.storeDir) - before,
      note: `${modes.join(', ')}, ${disks.reduce((s, d) => s + d.newChunks, 0)} new chunks; ${phases.map(([w, ms, cpu]) => `${w} ${Math.round(ms)} ms (cpu ${Math.round(cpu)})`).join(', ')}`,
    };
  }

  private daemonDeps(): DaemonDeps {
    return {
      ...(this.spare ? { spare: this.spare } : {}),
      vm: VM,
      runner: this.runner,
      nbd: {
        start: (o) => startQemuNbd(this.runner, o),
        stopLeft: async (d, name) => {
          await stopQemuNbd(d, name);
        },
      },
      socketDir: this.socketDir,
      // Written as the agent writes it (atomically, fsynced), so the round counts it.
      record: {
        write: (r) => writeViewRecordFile(join(this.socketDir, 'backup-view.json'), r),
        remove: () => rm(join(this.socketDir, 'backup-view.json'), { force: true }),
      },
    };
  }

  async restore(outDir: string): Promise<RestoreFigures> {
    const manifest = this.base!;
    const path = join(outDir, 'vmlink.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, String(this.sizeBytes)]);
    const t0 = performance.now();
    const server = await startQemuNbd(this.runner, {
      image: path,
      format: 'qcow2',
      readOnly: false,
      socketDir: this.socketDir,
      exportName: 'restore',
    });
    const codec = await this.threads.codecFor(this.keys);
    try {
      await restoreDisks(
        manifest,
        this.keys,
        this.store!,
        {
          disks: [
            { name: DISK, sizeBytes: this.sizeBytes, socket: server.socket, exportName: server.exportName },
          ],
        },
        [{ from: DISK, to: DISK }],
        connectNbd,
        undefined,
        codec,
      );
    } finally {
      await codec.close();
      await server.stop();
    }
    return { ms: performance.now() - t0, path, format: 'qcow2' };
  }

  /** GC (nothing to sweep: every chunk is named) and a checksum verify of every snapshot, timed; the store's size. */
  async upkeep(): Promise<{ gcMs: number; verifyMs: number; chunks: number; storedBytes: number }> {
    const store = this.store!;
    const t0 = performance.now();
    await store.gc(0);
    const t1 = performance.now();
    const v = await store.verify(undefined);
    if (v.problems.length > 0)
      throw new Error(`verify found problems: ${JSON.stringify(v.problems.slice(0, 3))}`);
    const t2 = performance.now();
    const st = await store.status();
    return { gcMs: t1 - t0, verifyMs: t2 - t1, chunks: st.chunks, storedBytes: st.storedBytes };
  }

  async close(): Promise<void> {
    await this.spare?.close();
    await this.threads.close();
  }
}
