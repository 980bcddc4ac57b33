// Fake backup agents for the controller's backup tests: FakeFleet's hosts (test/helpers/fake-agents.ts) plus the backup
// calls of controller/backup/agents.ts. Stores keep real signed manifests (BackupKeySet: fingerprint, signature, the
// sealed VM config) so restores check keys as the real agent does; jobs run when polled. Every request is recorded so
// tests can check what carried a key (only the requests that need one).
import { FakeFleet } from '../../../test/helpers/fake-agents.js';
import type {
  BackupRunRequest,
  FileRestoreRequest,
  RestoreRequest,
  StoreEnsureRequest,
  VerifyRequest,
} from '../../agent/wire-backup.js';
import {
  BACKUP_CHUNK_BYTES,
  type BackupJob,
  type BackupStoreStatus,
  type Manifest,
  parseSnapshotId,
  type SnapshotSummary,
} from '../../shared/backup.js';
import { BackupKeySet } from '../../shared/backup-crypto.js';
import { ForbiddenError, KeyMismatchError, NotFoundError, UnavailableError } from '../../shared/errors.js';
import type { AgentFactory, AgentPort } from '../hosts.js';
import type { BackupAgent } from './agents.js';

/** One fake store: manifests by id, the fingerprint it is bound to, verify outcomes. */
export interface FakeStore {
  config: StoreEnsureRequest['store'];
  fingerprint?: string;
  manifests: Map<string, Manifest>;
  verify: Map<string, NonNullable<SnapshotSummary['verify']>>;
}

/** A recorded backup call: the method, the host asked, and the request. */
export interface Call {
  host: string;
  method: string;
  req: unknown;
}

const summaryOf = (m: Manifest, verify?: SnapshotSummary['verify']): SnapshotSummary => ({
  id: m.id,
  vm: m.vm,
  host: m.host,
  policy: m.policy,
  createdAt: m.createdAt,
  finishedAt: m.finishedAt,
  ...(m.base ? { base: m.base } : {}),
  consistency: m.consistency,
  keyFingerprint: m.keyFingerprint,
  disks: m.disks.map(({ chunks, chunkBytes: _c, ...d }) => ({ ...d, chunkCount: chunks.length })),
  ...(verify ? { verify } : {}),
});

/** FakeFleet with backup calls; `stores` by host, then store name. */
export class FakeBackupFleet extends FakeFleet {
  readonly stores = new Map<string, Map<string, FakeStore>>();
  readonly calls: Call[] = [];
  private readonly jobs = new Map<
    string,
    { host: string; polls: number; job: BackupJob; finish: () => BackupJob }
  >();
  private seq = 0;
  /** Polls a job answers `running` before it ends. */
  pollsToFinish = 1;
  /** Make the next backup job fail with this message. */
  failBackup: string | undefined;
  /** Guest-agent answers: calls to exec that fail before one answers, per VM (absent: answers at once). */
  readonly guestDelay = new Map<string, number>();

  storeOf(host: string, name: string): FakeStore {
    const s = this.stores.get(host)?.get(name);
    if (!s) throw new NotFoundError('backup store', `${name} on ${host}`);
    return s;
  }

  /** Adds `m` to a store (tests seeding snapshots at chosen times). */
  put(host: string, store: string, m: Manifest): void {
    const s = this.storeOf(host, store);
    s.fingerprint ??= m.keyFingerprint;
    s.manifests.set(m.id, m);
  }

  /** A signed manifest of `vm` at `id` under `keys` with `config` sealed. */
  static manifest(
    keys: BackupKeySet,
    o: { id: string; host: string; policy: string; config: unknown; base?: string; sizeBytes?: number },
  ): Manifest {
    const { vm, at } = parseSnapshotId(o.id);
    const unsigned: Omit<Manifest, 'signature'> = {
      version: 1,
      id: o.id,
      vm,
      host: o.host,
      policy: o.policy,
      createdAt: at.toISOString(),
      finishedAt: at.toISOString(),
      ...(o.base ? { base: o.base } : {}),
      consistency: 'frozen',
      keyFingerprint: keys.fingerprint,
      disks: [
        {
          name: 'root',
          sizeBytes: o.sizeBytes ?? 8 * BACKUP_CHUNK_BYTES,
          chunkBytes: BACKUP_CHUNK_BYTES,
          chunks: [],
          mode: o.base ? 'incremental' : 'full',
          ...(o.base ? {} : { fullReason: 'first' as const }),
          readBytes: 4096,
          newChunks: 1,
          storedBytes: 1000,
        },
      ],
      config: keys.sealConfig(o.config),
    };
    return { ...unsigned, signature: keys.signManifest(unsigned) };
  }

  /** The factory the controller gets: FakeFleet's clients with backup calls. */
  readonly backupAgents: AgentFactory = (spec, host) => {
    const base = this.agents(spec, host);
    const fake = this.host(host);
    const reachable = () => {
      if (fake.down) throw new UnavailableError(`cannot reach the agent of ${host}: ECONNREFUSED`);
    };
    const rec = (method: string, req: unknown) => {
      reachable();
      this.calls.push({ host, method, req: structuredClone(req) });
    };
    const stores = () => {
      let m = this.stores.get(host);
      if (!m) {
        m = new Map();
        this.stores.set(host, m);
      }
      return m;
    };
    const statusOf = (s: FakeStore): BackupStoreStatus => ({
      name: s.config.name,
      offsite: s.config.offsite,
      ...(s.fingerprint ? { keyFingerprint: s.fingerprint } : {}),
      snapshots: s.manifests.size,
      chunks: s.manifests.size,
      storedBytes: s.manifests.size * 1000,
      freeBytes: 1 << 30,
    });
    const backup: BackupAgent = {
      backupStoreEnsure: async (config) => {
        rec('backupStoreEnsure', config);
        const m = stores();
        const s = m.get(config.name) ?? { config, manifests: new Map(), verify: new Map() };
        m.set(config.name, s);
        return statusOf(s);
      },
      backupStores: async () => {
        reachable();
        return [...stores().values()].map(statusOf);
      },
      snapshots: async (store, vm) => {
        reachable();
        const s = this.storeOf(host, store);
        return [...s.manifests.values()]
          .filter((m) => !vm || m.vm === vm)
          .map((m) => summaryOf(m, s.verify.get(m.id)));
      },
      manifest: async (store, id) => {
        reachable();
        const m = this.storeOf(host, store).manifests.get(id);
        if (!m) throw new NotFoundError('snapshot', id);
        return structuredClone(m);
      },
      prune: async (store, ids) => {
        rec('prune', { store, ids });
        const s = this.storeOf(host, store);
        if (s.config.offsite) throw new ForbiddenError(`store ${store} is offsite`);
        return ids.filter((id) => s.manifests.delete(id));
      },
      gc: async (store) => {
        rec('gc', { store });
        return { store, chunksKept: 1, chunksRemoved: 0, bytesFreed: 0, chunksInGrace: 0 };
      },
      verify: async (store, req: VerifyRequest) => {
        rec('verify', { store, req });
        const s = this.storeOf(host, store);
        return this.newJob(host, 'verify', () => ({
          verify: {
            store,
            snapshots: req.snapshots?.length ?? s.manifests.size,
            chunksChecked: 1,
            bytesRead: 1,
            deep: !!req.key,
            problems: [],
          },
        }));
      },
      pull: async (store, req) => {
        rec('pull', { store, req });
        const mine = this.storeOf(host, store);
        const from = this.storeOf(req.from.host, req.from.store);
        return this.newJob(host, 'pull', () => {
          const pulled = [...from.manifests.values()].filter((m) => !mine.manifests.has(m.id));
          for (const m of pulled) mine.manifests.set(m.id, m);
          mine.fingerprint ??= from.fingerprint;
          return {
            pull: {
              store,
              from: req.from.store,
              snapshotsPulled: pulled.map((m) => m.id),
              chunksFetched: pulled.length,
              bytesFetched: 100,
              chunksAlreadyThere: 0,
            },
          };
        });
      },
      startBackup: async (req: BackupRunRequest) => {
        rec('startBackup', req);
        const keys = BackupKeySet.fromBase64(req.key.value, req.key.name);
        const vmCfg = fake.vms.get(req.vm)?.config;
        if (!vmCfg) throw new NotFoundError('vm', `${req.vm} on ${host}`);
        const fail = this.failBackup;
        this.failBackup = undefined;
        return this.newJob(host, 'backup', () => {
          if (fail) throw new Error(fail);
          const s = this.storeOf(req.store.host, req.store.store);
          if (s.fingerprint && s.fingerprint !== keys.fingerprint)
            throw new KeyMismatchError(`store ${req.store.store} is bound to another key`);
          const m = FakeBackupFleet.manifest(keys, {
            id: req.snapshot,
            host,
            policy: req.policy,
            config: vmCfg,
            ...(req.base ? { base: req.base } : {}),
          });
          this.put(req.store.host, req.store.store, m);
          return { snapshot: summaryOf(m) };
        });
      },
      startRestore: async (req: RestoreRequest) => {
        rec('startRestore', req);
        const vm = fake.vms.get(req.vm);
        if (!vm) throw new NotFoundError('vm', `${req.vm} on ${host}`);
        if (vm.state !== 'stopped') throw new UnavailableError(`vm ${req.vm} runs`);
        return this.newJob(host, 'restore', () => ({
          restored: { disks: [{ name: 'root', bytesWritten: 4096 }], seconds: 0.5 },
        }));
      },
      startFileRestore: async (req: FileRestoreRequest) => {
        rec('startFileRestore', req);
        return this.newJob(host, 'file-restore', () => ({
          file: { path: req.path, size: 5, data: Buffer.from('hello').toString('base64') },
        }));
      },
      job: async (id) => {
        reachable();
        const j = this.jobs.get(id);
        if (!j || j.host !== host) throw new NotFoundError('backup job', id);
        if (j.job.state === 'running' && ++j.polls >= this.pollsToFinish) j.job = j.finish();
        j.job = { ...j.job, progress: { done: Math.min(j.polls, 2), total: 2 } };
        return structuredClone(j.job);
      },
    };
    const exec: AgentPort['exec'] = async (vm) => {
      reachable();
      const left = this.guestDelay.get(vm) ?? 0;
      if (fake.vms.get(vm)?.state !== 'running') throw new UnavailableError(`vm ${vm} is not running`);
      if (left > 0) {
        this.guestDelay.set(vm, left - 1);
        throw new UnavailableError(`the guest agent of ${vm} does not answer yet`);
      }
      return { exitCode: 0, stdout: '', stderr: '' };
    };
    return Object.assign(Object.create(base) as AgentPort, backup, { exec });
  };

  private newJob(host: string, kind: BackupJob['kind'], finish: () => Partial<BackupJob>): BackupJob {
    const id = `job-${++this.seq}`;
    const job: BackupJob = {
      id,
      kind,
      state: 'running',
      startedAt: new Date().toISOString(),
      progress: { done: 0, total: 2 },
      notes: [],
    };
    this.jobs.set(id, {
      host,
      polls: 0,
      job,
      finish: () => {
        try {
          return { ...job, state: 'succeeded', finishedAt: new Date().toISOString(), ...finish() };
        } catch (e) {
          const err = e as Error & { kind?: string };
          return {
            ...job,
            state: 'failed',
            error: err.message,
            ...(err.kind ? { errorKind: err.kind } : {}),
          };
        }
      },
    });
    return job;
  }

  /** Every recorded request as JSON (tests grep it for key values). */
  sentText(): string {
    return JSON.stringify(this.calls);
  }
}
