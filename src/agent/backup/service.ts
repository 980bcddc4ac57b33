// An agent's backup side (docs/backup.md): the stores it serves, and the jobs it runs: a backup of one of its VMs to a
// store (here or on another host's agent), a restore into one of its stopped VMs, one file out of a snapshot, a
// store's verify, an offsite store's pull. Keys arrive with the one request that needs them and live in memory for
// that job only.
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChunkStore } from '../../drivers/backup/types.js';
import type { HypervisorDriver, SecretValues } from '../../drivers/hypervisor/types.js';
import type { Runner } from '../../exec/runner.js';
import {
  type BackupJob,
  type FullReadReason,
  type Manifest,
  ManifestSchema,
  manifestVersionFor,
  type PullResult,
  type SnapshotId,
  type SnapshotSummary,
  type StoreLocation,
  type VerifyResult,
} from '../../shared/backup.js';
import {
  ForbiddenError,
  InvalidRequestError,
  KeyMismatchError,
  NotFoundError,
  UnsupportedError,
  VmlinkError,
} from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import type { TlsCredentials } from '../../shared/tls.js';
import type {
  BackupKey,
  BackupRunRequest,
  FileRestoreRequest,
  PullRequest,
  RestoreRequest,
  VerifyRequest,
} from '../wire-backup.js';
import { debugfsDump, imagePaths, openSparse, partitionRange } from './file-restore.js';
import { BackupJobs } from './jobs.js';
import {
  askBaseChunks,
  backupDisks,
  type ChunkKeys,
  type ChunkSink,
  type ChunkSource,
  checkRestorable,
  inlineCodec,
  type NbdConnector,
  readChunk,
  restoreDisks,
  restoreRange,
} from './pipeline.js';
import { pullSnapshots, type RetentionFn } from './pull.js';
import { jobCodec } from './seal-workers.js';
import { StoreClient } from './store-client.js';
import type { BackupStores } from './stores.js';

/** Everything a job does with a key (shared/backup-crypto.ts's BackupKeySet). */
export interface BackupKeys extends ChunkKeys {
  signManifest(m: Omit<Manifest, 'signature'>): string;
  sealConfig(json: unknown): string;
}

/** Dependencies of the backup side. */
export interface BackupServiceDeps {
  host: string;
  stateDir: string;
  runner: Runner;
  hypervisor: HypervisorDriver;
  stores: BackupStores;
  /**
   * This host's current credentials (they rotate): other hosts' stores are reached over mutual TLS with them
   * (undefined: http:// only, tests).
   */
  tls?: () => TlsCredentials | undefined;
  connect: NbdConnector;
  /** The key set of a key value (BackupKeySet.fromBase64). */
  keys: (key: BackupKey) => BackupKeys;
  /** Retention (shared/backup-retention.ts's applyRetention); absent: a pull with retention is refused. */
  retention?: RetentionFn;
  jobs?: BackupJobs;
}

/** The dirty bitmap that counts writes since snapshot `id` of `policy` (docs/backup.md, "Bitmaps"). */
export const bitmapName = (policy: string, id: SnapshotId) => `vmlink-${policy}-${id.split('@')[1]}`;

/** A snapshot as a store lists it, from its manifest. */
export function summaryOf(m: Manifest): SnapshotSummary {
  return {
    id: m.id,
    vm: m.vm,
    host: m.host,
    policy: m.policy,
    createdAt: m.createdAt,
    finishedAt: m.finishedAt,
    ...(m.base ? { base: m.base } : {}),
    consistency: m.consistency,
    keyFingerprint: m.keyFingerprint,
    disks: m.disks.map((d) => ({
      name: d.name,
      sizeBytes: d.sizeBytes,
      mode: d.mode,
      ...(d.fullReason ? { fullReason: d.fullReason } : {}),
      readBytes: d.readBytes,
      newChunks: d.newChunks,
      storedBytes: d.storedBytes,
      chunkCount: d.chunks.length,
    })),
  };
}

const secretValues = (s: BackupRunRequest['secrets']): SecretValues | undefined => s;

/** The backup side of one agent. */
export class BackupService {
  readonly jobs: BackupJobs;

  constructor(private readonly deps: BackupServiceDeps) {
    this.jobs = deps.jobs ?? new BackupJobs(deps.host, undefined, join(deps.stateDir, 'backup-jobs'));
  }

  get stores(): BackupStores {
    return this.deps.stores;
  }

  get host(): string {
    return this.deps.host;
  }

  /**
   * At agent start (after the driver's adopt undid cut-short backup views and NBD servers): the stores are opened
   * again (their tmp/ cleared of partial chunk files), file-restore leftovers removed, and then the job records read:
   * a job that was running is `failed: agent restarted`.
   */
  async start(): Promise<void> {
    await rm(this.tmpRoot(), { recursive: true, force: true }).catch(() => {});
    await this.deps.stores.openAll();
    await this.jobs.load();
  }

  private tmpRoot(): string {
    return join(this.deps.stateDir, 'backup-tmp');
  }

  /**
   * The store at `loc` as a sink/source: this host's own store directly (refused when it is offsite: only its pulls
   * fill it), another host's through its agent.
   */
  private async storeAt(
    loc: StoreLocation,
    write: boolean,
  ): Promise<{ store: ChunkSink & ChunkSource & StoreReads; close(): void }> {
    if (loc.host === this.deps.host) {
      const store = await this.deps.stores.get(loc.store);
      if (write && store.config.offsite)
        throw new ForbiddenError(
          `backup store ${loc.store} on ${loc.host} is offsite: it is filled only by its own pulls, never by a backup`,
          `backup-store/${loc.store}`,
        );
      return { store, close: () => {} };
    }
    const client = new StoreClient(loc, this.deps.tls?.());
    return { store: client, close: () => client.close() };
  }

  // ---- Backup -------------------------------------------------------------------------------------------------

  startBackup(req: BackupRunRequest): BackupJob {
    if (req.snapshot.split('@')[0] !== req.vm)
      throw new InvalidRequestError(`snapshot id ${req.snapshot} is not of VM ${req.vm}`);
    if (req.base && req.base.split('@')[0] !== req.vm)
      throw new InvalidRequestError(`base snapshot ${req.base} is not of VM ${req.vm}`);
    if (!this.deps.hypervisor.backupOpen)
      throw new UnsupportedError(`the hypervisor of host ${this.deps.host} cannot back VMs up`);
    const keys = this.deps.keys(req.key);
    return this.jobs.start('backup', `backup of VM ${req.vm}`, async (job) => {
      const cfg = await this.deps.hypervisor.config(req.vm);
      if (!cfg) throw new NotFoundError(`VM on host ${this.deps.host}`, req.vm);
      const { store, close } = await this.storeAt(req.store, true);
      try {
        // A store holding another key's snapshots would refuse the manifest at the end: refused before a chunk moves.
        const other = (await store.list()).find((s) => s.keyFingerprint !== keys.fingerprint);
        if (other)
          throw new KeyMismatchError(
            `backup store ${req.store.store} on ${req.store.host} holds snapshots of key ${other.keyFingerprint} (e.g. ${other.id}); key ${req.key.name} has fingerprint ${keys.fingerprint}: nothing was sent`,
            `backup-store/${req.store.store}`,
          );
        let base: Manifest | undefined;
        let noBase: FullReadReason = 'first';
        if (req.base) {
          try {
            base = await store.getManifest(req.base);
            keys.verifyManifest(base);
            if (base.vm !== req.vm) throw new InvalidRequestError(`snapshot ${req.base} is of VM ${base.vm}`);
          } catch (e) {
            // The disks read whole and say why; the base bitmap still goes away at commit.
            base = undefined;
            noBase = 'base-missing';
            job.note(`base snapshot ${req.base} cannot be used (${(e as Error).message}): disks read whole`);
          }
        }
        // The base's chunks are asked about (and touched) while the view opens: that mostly waits for QEMU.
        const baseAsked = base ? askBaseChunks(store, base) : undefined;
        const view = await this.deps.hypervisor.backupOpen!(
          req.vm,
          {
            bitmaps: {
              ...(req.base ? { base: bitmapName(req.policy, req.base) } : {}),
              next: bitmapName(req.policy, req.snapshot),
            },
            freeze: req.freeze,
            full: req.full,
          },
          undefined,
          secretValues(req.secrets),
        );
        if (view.consistency === 'crash-consistent')
          job.note(`crash-consistent: ${view.consistencyNote ?? 'the guest was not frozen'}`);
        let manifest: Manifest;
        try {
          const codec = await jobCodec(keys);
          const disks = await backupDisks(
            view,
            base,
            keys,
            store,
            this.deps.connect,
            (d, t) => job.progress(d, t),
            noBase,
            codec,
            undefined,
            baseAsked,
          ).finally(() => codec.close());
          for (const d of disks)
            if (d.mode === 'full' && d.fullReason && d.fullReason !== 'first')
              job.note(`disk ${d.name} was read whole: ${d.fullReason}`);
          const unsigned: Omit<Manifest, 'signature'> = {
            version: manifestVersionFor(disks),
            id: req.snapshot,
            vm: req.vm,
            host: this.deps.host,
            policy: req.policy,
            createdAt: view.at.toISOString(),
            finishedAt: new Date().toISOString(),
            ...(base ? { base: base.id } : {}),
            consistency: view.consistency,
            ...(view.consistencyNote ? { consistencyNote: view.consistencyNote.slice(0, 300) } : {}),
            keyFingerprint: keys.fingerprint,
            disks,
            config: keys.sealConfig(cfg),
          };
          manifest = ManifestSchema.parse({ ...unsigned, signature: keys.signManifest(unsigned) });
          await store.putManifest(manifest);
        } catch (e) {
          await view
            .abort()
            .catch((err: unknown) =>
              log.error(
                { vm: req.vm, err: (err as Error).message },
                'backup failed, and its view could not be aborted',
              ),
            );
          throw e;
        }
        await view.commit().catch((e: unknown) => {
          log.error({ vm: req.vm, err: (e as Error).message }, 'backup stored, but its view did not commit');
          job.note(`snapshot stored, but the VM's bitmaps were not switched (${(e as Error).message})`);
        });
        return { snapshot: summaryOf(manifest) };
      } finally {
        close();
      }
    });
  }

  // ---- Restore -------------------------------------------------------------------------------------------------

  startRestore(req: RestoreRequest): BackupJob {
    const h = this.deps.hypervisor;
    if (!h.restoreOpen)
      throw new UnsupportedError(`the hypervisor of host ${this.deps.host} cannot restore VMs`);
    const keys = this.deps.keys(req.key);
    return this.jobs.start('restore', `restore of VM ${req.vm}`, async (job) => {
      const started = Date.now();
      if (!(await h.config(req.vm))) throw new NotFoundError(`VM on host ${this.deps.host}`, req.vm);
      const { store, close } = await this.storeAt(req.store, false);
      try {
        const manifest = await store.getManifest(req.snapshot);
        const mapping = req.disks ?? manifest.disks.map((d) => ({ from: d.name, to: d.name }));
        // Key and signature before the VM's disks are even opened.
        checkRestorable(manifest, keys, { disks: [] }, []);
        const target = await h.restoreOpen!(req.vm, undefined, secretValues(req.secrets));
        try {
          const codec = await jobCodec(keys);
          const disks = await restoreDisks(
            manifest,
            keys,
            store,
            target,
            mapping,
            this.deps.connect,
            (d, t) => job.progress(d, t),
            codec,
          ).finally(() => codec.close());
          return { restored: { disks, seconds: (Date.now() - started) / 1000 } };
        } finally {
          await target.close();
        }
      } finally {
        close();
      }
    });
  }

  startFileRestore(req: FileRestoreRequest): BackupJob {
    const keys = this.deps.keys(req.key);
    return this.jobs.start('file-restore', `file restore from ${req.snapshot}`, async (job) => {
      const { store, close } = await this.storeAt(req.store, false);
      await mkdir(this.tmpRoot(), { recursive: true, mode: 0o700 });
      const dir = await mkdtemp(join(this.tmpRoot(), 'file-'));
      try {
        const manifest = await store.getManifest(req.snapshot);
        checkRestorable(manifest, keys, { disks: [] }, []);
        const disk = manifest.disks.find((d) => d.name === req.disk);
        if (!disk) throw new NotFoundError(`disk of snapshot ${manifest.id}`, req.disk);
        let range = { offset: 0, length: disk.sizeBytes };
        if (req.partition !== undefined) {
          if (disk.chunks.length === 0) throw new NotFoundError('partition', String(req.partition));
          const head = await readChunk(manifest, disk, 0, inlineCodec(keys), store);
          range = partitionRange(head, req.partition, disk.sizeBytes);
        }
        const { image, out } = imagePaths(dir);
        const fh = await openSparse(image, range.length);
        try {
          await restoreRange(
            manifest,
            disk.name,
            range,
            keys,
            store,
            async (at, data) => {
              await fh.write(data, 0, data.length, at);
            },
            (d, t) => job.progress(d, t),
          );
        } finally {
          await fh.close();
        }
        const size = await debugfsDump(this.deps.runner, image, req.path, out);
        const data = await readFile(out);
        return { file: { path: req.path, size, data: data.subarray(0, size).toString('base64') } };
      } finally {
        close();
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  // ---- Store upkeep --------------------------------------------------------------------------------------------

  async startVerify(storeName: string, req: VerifyRequest): Promise<BackupJob> {
    const store = await this.deps.stores.get(storeName);
    const keys = req.key ? this.deps.keys(req.key) : undefined;
    return this.jobs.start('verify', `verify of store ${storeName}`, async (job) => {
      const open = keys ? (id: string, blob: Buffer) => keys.openChunk(id, blob) : undefined;
      const verify: VerifyResult = await store.verify(req.snapshots, open, (d, t) => job.progress(d, t));
      // A deep verify also checks each manifest's signature under the key.
      if (keys)
        for (const s of await store.list()) {
          if (req.snapshots && !req.snapshots.includes(s.id)) continue;
          try {
            keys.verifyManifest(await store.getManifest(s.id));
          } catch (e) {
            if (verify.problems.length < 1000)
              verify.problems.push({ snapshot: s.id, problem: (e as Error).message.slice(0, 500) });
          }
        }
      return { verify };
    });
  }

  async startPull(storeName: string, req: PullRequest): Promise<BackupJob> {
    const dest = await this.deps.stores.get(storeName);
    if (req.from.host === this.deps.host && req.from.store === storeName)
      throw new InvalidRequestError(`backup store ${storeName} cannot pull from itself`);
    const retention = req.retention;
    if (retention && !this.deps.retention)
      throw new UnsupportedError(`the agent of ${this.deps.host} has no retention to apply after a pull`);
    return this.jobs.start('pull', `pull into store ${storeName}`, async (job) => {
      const { store: source, close } = await this.storeAt(req.from, false);
      try {
        const r = await pullSnapshots(
          dest,
          { ...sourceOf(source), loc: req.from },
          {
            snapshots: req.snapshots,
            retention: retention ? { rules: retention, apply: this.deps.retention! } : undefined,
            progress: (d, t) => job.progress(d, t),
          },
        );
        if (r.pruned.length)
          job.note(`retention removed ${r.pruned.length} snapshot(s): ${r.pruned.join(', ')}`);
        const { pruned: _p, ...pull } = r;
        return { pull: pull satisfies PullResult };
      } finally {
        close();
      }
    });
  }

  /** Prunes snapshots of a store; an offsite store only from the local socket (`local`). */
  async prune(storeName: string, snapshots: SnapshotId[], local: boolean): Promise<SnapshotId[]> {
    const store = await this.deps.stores.get(storeName);
    if (store.config.offsite && !local)
      throw new ForbiddenError(
        `backup store ${storeName} on ${this.deps.host} is offsite: nothing reaching its agent over the network may delete from it (its own retention prunes it; an operator can prune it on ${this.deps.host} through the agent's local socket)`,
        `backup-store/${storeName}`,
      );
    return store.deleteSnapshots(snapshots);
  }
}

/** What a job reads of a store (ChunkStore or StoreClient). */
interface StoreReads {
  putManifest(m: Manifest): Promise<void>;
  getManifest(id: SnapshotId): Promise<Manifest>;
  list(vm?: string): Promise<SnapshotSummary[]>;
}

const sourceOf = (s: ChunkSink & ChunkSource & StoreReads) => ({
  list: (vm?: string) => s.list(vm),
  getManifest: (id: SnapshotId) => s.getManifest(id),
  getChunk: (id: string) => s.getChunk(id),
});

/** Whether `e` is a typed vmlink error of `kind`. */
export const isKind = (e: unknown, kind: string) => e instanceof VmlinkError && e.kind === kind;

export type { ChunkStore };
