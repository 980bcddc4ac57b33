// An agent's long backup jobs (backup runs, restores, file restores, verifies, pulls): started by a request that
// answers at once with the job, then polled (`GET /v1/backup-jobs/:id`). At most BACKUP_JOBS_KEPT are kept; the oldest
// finished ones are dropped first, and a new job is refused while that many run.
// With a directory, each job is also a record there (`<id>.json`, 0600, written atomically: when it starts, before
// the request is answered, and when it ends), so an agent that dies mid-job answers for it after its restart: `load`
// marks a job that was running `failed: agent restarted` (kind `unavailable`), once the agent's start has cleaned what
// such a job leaves (backup views, NBD servers, bitmaps: the driver's adopt; partial chunk files: the stores' open).
// A file restore's content stays in memory only: one not fetched before a restart counts as cut short too.
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BACKUP_JOBS_KEPT, type BackupJob, BackupJobSchema } from '../../shared/backup.js';
import { InvalidStateError, NotFoundError, VmlinkError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import { jsonRecordNames, readJsonFile, writeJsonFile, writeJsonFileSync } from '../../shared/state-file.js';

/** The start of the error of a job cut short by its agent's restart (the controller shows it as is). */
export const AGENT_RESTARTED = 'agent restarted';
/** Job ids as `start` makes them: also their record's file name. */
const JOB_ID = /^[a-z-]{1,16}-[0-9a-z]{1,16}-[0-9a-f]{8}$/;

/** What a running job may update. */
export interface JobHandle {
  readonly id: string;
  /** Bytes done of bytes to do. */
  progress(done: number, total: number): void;
  /** A note worth showing (a full read and why; an unfrozen guest). */
  note(text: string): void;
}

/** What a job's work resolves to: the fields of its kind (snapshot, restored, file, verify, pull). */
export type JobOutcome = Partial<Pick<BackupJob, 'snapshot' | 'restored' | 'file' | 'verify' | 'pull'>>;

/** The jobs of one agent. */
export class BackupJobs {
  private readonly jobs = new Map<string, BackupJob>();

  /** Pending record writes per job, in order (a job's end never overtakes its start). */
  private readonly writes = new Map<string, Promise<void>>();

  /** `dir`: where job records live (root's, e.g. `<state dir>/backup-jobs`); none: memory only. */
  constructor(
    private readonly host: string,
    private readonly kept = BACKUP_JOBS_KEPT,
    private readonly dir?: string,
  ) {}

  /**
   * Starts `work` as a job of `kind` and answers the job as it is at once. `key` (e.g. `backup web1`) refuses a second
   * job on the same object while one runs (InvalidStateError naming the running one).
   */
  start(kind: BackupJob['kind'], key: string, work: (job: JobHandle) => Promise<JobOutcome>): BackupJob {
    const running = [...this.jobs.values()].filter((j) => j.state === 'running');
    const clash = running.find((j) => this.keys.get(j.id) === key);
    if (clash)
      throw new InvalidStateError(
        `${key} is already in progress on host ${this.host} (job ${clash.id}, started ${clash.startedAt})`,
        key,
      );
    if (running.length >= this.kept)
      throw new InvalidStateError(
        `host ${this.host} already runs ${running.length} backup jobs (the most it keeps): try again when one ends`,
      );
    this.trim();
    const id = `${kind}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
    const job: BackupJob = {
      id,
      kind,
      state: 'running',
      startedAt: new Date().toISOString(),
      progress: { done: 0, total: 0 },
      notes: [],
    };
    // On disk before anyone hears of it: a job the controller polls is never one a restart forgets.
    this.recordNow(job);
    this.jobs.set(id, job);
    this.keys.set(id, key);
    const handle: JobHandle = {
      id,
      progress: (done, total) => {
        job.progress = { done: Math.max(0, Math.floor(done)), total: Math.max(0, Math.floor(total)) };
      },
      note: (text) => {
        if (job.notes.length < 32) job.notes.push(text.slice(0, 500));
      },
    };
    void Promise.resolve()
      .then(() => work(handle))
      .then(
        (out) => {
          Object.assign(job, out, { state: 'succeeded', finishedAt: new Date().toISOString() });
          this.record(job);
          log.info({ job: id, kind, key }, 'backup job succeeded');
        },
        (e: unknown) => {
          const err = e instanceof Error ? e : new Error(String(e));
          job.state = 'failed';
          job.finishedAt = new Date().toISOString();
          job.error = err.message.slice(0, 2000);
          job.errorKind = e instanceof VmlinkError ? e.kind : 'internal';
          this.record(job);
          log.warn({ job: id, kind, key, err: err.message }, 'backup job failed');
        },
      );
    return { ...job, notes: [...job.notes] };
  }

  private readonly keys = new Map<string, string>();

  /** A job as it is now; NotFoundError naming the host (which may have restarted) when unknown. */
  get(id: string): BackupJob {
    const j = this.jobs.get(id);
    if (!j) throw new NotFoundError(`backup job on host ${this.host} (its agent may have restarted)`, id);
    return { ...j, progress: { ...j.progress }, notes: [...j.notes] };
  }

  /** Drops the oldest finished jobs so that a new one fits. */
  private trim(): void {
    if (this.jobs.size < this.kept) return;
    for (const [id, j] of this.jobs) {
      if (this.jobs.size < this.kept) break;
      if (j.state !== 'running') {
        this.jobs.delete(id);
        this.keys.delete(id);
        this.forget(id);
      }
    }
  }

  /**
   * At agent start (after the driver's adopt and the stores' open have cleaned what cut-short jobs left): the jobs
   * of the records, the newest `kept`; each that was running is now `failed: agent restarted`. Records that do not
   * parse (or are not named as a job) are removed. Returns the jobs it marked failed.
   */
  async load(): Promise<BackupJob[]> {
    if (!this.dir) return [];
    const dir = this.dir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // A write cut short by the crash leaves its temporary file.
    for (const n of await readdir(dir))
      if (n.endsWith('.tmp')) await rm(join(dir, n), { force: true }).catch(() => {});
    const found: BackupJob[] = [];
    for (const name of await jsonRecordNames(dir)) {
      const path = join(dir, `${name}.json`);
      const j = JOB_ID.test(name)
        ? await readJsonFile(path, BackupJobSchema).catch((e: unknown) => {
            log.warn({ path, err: (e as Error).message }, 'backup job record does not parse: removed');
            return undefined;
          })
        : undefined;
      if (j?.id === name) found.push(j);
      else await rm(path, { force: true });
    }
    found.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
    for (const old of found.splice(0, Math.max(0, found.length - this.kept)))
      await rm(join(dir, `${old.id}.json`), { force: true });
    const cut: BackupJob[] = [];
    const at = new Date().toISOString();
    for (const j of found) {
      const unfetched = j.kind === 'file-restore' && j.state === 'succeeded' && !j.file;
      if (j.state === 'running' || unfetched) {
        Object.assign(j, {
          state: 'failed',
          finishedAt: at,
          errorKind: 'unavailable',
          error: cutShort(this.host, j, unfetched),
        });
        await writeJsonFile(join(dir, `${j.id}.json`), persisted(j));
        cut.push(j);
        log.warn({ job: j.id, kind: j.kind }, 'backup job cut short by an agent restart: recorded as failed');
      }
      this.jobs.set(j.id, j);
    }
    return cut;
  }

  /** Waits for the record writes queued so far (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.writes.values()]);
  }

  private path(id: string): string {
    return join(this.dir!, `${id}.json`);
  }

  /** Writes `job`'s record now (a job that cannot be recorded is refused before it starts). */
  private recordNow(job: BackupJob): void {
    if (!this.dir) return;
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      writeJsonFileSync(this.path(job.id), persisted(job));
    } catch (e) {
      throw new VmlinkError(
        'internal',
        `host ${this.host} cannot record a new ${job.kind} job in ${this.dir} (${(e as Error).message}): nothing was started`,
        { cause: e },
      );
    }
  }

  private record(job: BackupJob): void {
    if (!this.dir) return;
    const snapshot = persisted(job);
    this.chain(job.id, () => writeJsonFile(this.path(job.id), snapshot));
  }

  private forget(id: string): void {
    if (this.dir) this.chain(id, () => rm(this.path(id), { force: true }));
  }

  private chain(id: string, f: () => Promise<void>): void {
    const next = (this.writes.get(id) ?? Promise.resolve())
      .then(f)
      .catch((e: unknown) =>
        log.warn({ job: id, err: (e as Error).message }, 'backup job record could not be written'),
      );
    this.writes.set(id, next);
    void next.then(() => {
      if (this.writes.get(id) === next) this.writes.delete(id);
    });
  }
}

/** A job as its record keeps it: without a file restore's content (guest data, up to 64 MiB: memory only). */
function persisted(job: BackupJob): BackupJob {
  const { file: _file, ...rest } = job;
  return { ...rest, progress: { ...job.progress }, notes: [...job.notes] };
}

function cutShort(host: string, j: BackupJob, unfetched: boolean): string {
  if (unfetched)
    return `${AGENT_RESTARTED}: the agent of host ${host} restarted before the restored file was fetched (it is kept in memory only); run the file restore again`;
  const restore =
    j.kind === 'restore' ? "; the VM's disks may be partly written: restore again before starting it" : '';
  return `${AGENT_RESTARTED}: the agent of host ${host} stopped while this ${j.kind} job ran (started ${j.startedAt}); what it left (backup views, NBD servers, bitmaps, partial chunk files) was cleaned up when the agent started again, so it can run again${restore}`;
}
