// An agent's long backup jobs (backup runs, restores, file restores, verifies, pulls): started by a request that
// answers at once with the job, then polled (`GET /v1/backup-jobs/:id`). Kept in memory only: an agent that restarts
// has forgotten its jobs, and the controller's poll says so (404) and fails its task naming the host. At most
// BACKUP_JOBS_KEPT are kept; the oldest finished ones are dropped first, and a new job is refused while that many run.
import { randomBytes } from 'node:crypto';
import { BACKUP_JOBS_KEPT, type BackupJob } from '../../shared/backup.js';
import { InvalidStateError, NotFoundError, VmlinkError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';

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

  constructor(
    private readonly host: string,
    private readonly kept = BACKUP_JOBS_KEPT,
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
          log.info({ job: id, kind, key }, 'backup job succeeded');
        },
        (e: unknown) => {
          const err = e instanceof Error ? e : new Error(String(e));
          job.state = 'failed';
          job.finishedAt = new Date().toISOString();
          job.error = err.message.slice(0, 2000);
          job.errorKind = e instanceof VmlinkError ? e.kind : 'internal';
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
      }
    }
  }
}
