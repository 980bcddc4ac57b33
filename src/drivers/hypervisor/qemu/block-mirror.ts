// The QMP sequences of a disk mirror (QEMU's docs/interop/live-block-operations.rst): `blockdev-mirror` (sync full)
// of a disk's format node to a node opened beside it, `query-block-jobs` until the job is READY (source and target
// in step, every guest write now going to both), then either `job-complete` (the device pivots to the target: a
// disk moved to another pool) or `block-job-cancel` (the target keeps a consistent copy, the source stays in use: a
// block migration's switch-over). A failure cancels the job with force and the source is left as it was. QEMU's
// answers are untrusted: parsed field by field, bounded in count.
import { z } from 'zod';
import { TimeoutError, VmlinkError } from '../../../shared/errors.js';
import { sleep } from '../../../shared/time.js';
import type { QmpClient } from './qmp.js';

type Qmp = Pick<QmpClient, 'execute'>;

/** Prefix of every block job vmlink's mirrors make. */
export const MIRROR_JOB_PREFIX = 'vmlink-mirror-';
/** How often `query-block-jobs` is polled (ms). */
export const MIRROR_POLL_MS = 100;
/** How often a mirror's end is polled while the guest is paused for it (ms). */
const FINISH_POLL_MS = 10;
/** Block jobs read from one answer at most. */
const JOBS_MAX = 64;

/** One disk's mirror: its job id, the node copied from and the node copied to. */
export interface MirrorSpec {
  job: string;
  source: string;
  target: string;
  /** `full` (default): the whole disk as the guest sees it; `top`: only the top image's clusters (the target has the same backing). */
  sync?: 'full' | 'top';
}

/** Where the mirrors stand: bytes copied of the bytes known to copy (both grow while the guest writes). */
export interface MirrorProgress {
  doneBytes: number;
  totalBytes: number;
  ready: number;
  jobs: number;
}

const JobSchema = z
  .object({
    device: z.string().max(256),
    type: z.string().max(64).optional(),
    len: z.number().nonnegative().optional(),
    offset: z.number().nonnegative().optional(),
    ready: z.boolean().optional(),
    status: z.string().max(64).optional(),
    error: z.string().max(4096).optional(),
  })
  .passthrough();
const JobsSchema = z.array(JobSchema).max(JOBS_MAX);

const JobInfoSchema = z
  .object({ id: z.string().max(256), status: z.string().max(64), error: z.string().max(4096).optional() })
  .passthrough();
const JobInfosSchema = z.array(JobInfoSchema).max(JOBS_MAX);

/** `query-block-jobs`, by job id. */
export async function queryBlockJobs(qmp: Qmp): Promise<Map<string, z.infer<typeof JobSchema>>> {
  const parsed = JobsSchema.safeParse(await qmp.execute('query-block-jobs'));
  if (!parsed.success) throw new VmlinkError('exec', `QEMU's query-block-jobs answer does not parse`);
  return new Map(parsed.data.map((j) => [j.device, j]));
}

/** `query-jobs`, by job id (status and error of every job, concluded ones too). */
async function queryJobs(qmp: Qmp): Promise<Map<string, z.infer<typeof JobInfoSchema>>> {
  const parsed = JobInfosSchema.safeParse(await qmp.execute('query-jobs'));
  if (!parsed.success) throw new VmlinkError('exec', `QEMU's query-jobs answer does not parse`);
  return new Map(parsed.data.map((j) => [j.id, j]));
}

/** Starts one `blockdev-mirror` per spec (sync full unless it says top); QEMU dismisses nothing itself, so every end is read. */
export async function startMirrors(qmp: Qmp, specs: readonly MirrorSpec[]): Promise<void> {
  for (const s of specs)
    await qmp.execute('blockdev-mirror', {
      'job-id': s.job,
      device: s.source,
      target: s.target,
      sync: s.sync ?? 'full',
      'auto-finalize': true,
      'auto-dismiss': false,
    });
}

/**
 * Polls until every job is READY, reporting progress; throws (naming the disk's job and QEMU's reason) when one
 * fails or vanishes, or at `timeoutMs`.
 */
export async function awaitMirrorsReady(
  qmp: Qmp,
  specs: readonly MirrorSpec[],
  opts: { vm: string; timeoutMs: number; pollMs?: number; onProgress?: (p: MirrorProgress) => void },
): Promise<MirrorProgress> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const jobs = await queryBlockJobs(qmp);
    const p: MirrorProgress = { doneBytes: 0, totalBytes: 0, ready: 0, jobs: specs.length };
    for (const s of specs) {
      const j = jobs.get(s.job);
      if (!j || j.status === 'concluded' || j.status === 'aborting' || j.error) {
        const why = j?.error ?? (await queryJobs(qmp).catch(() => undefined))?.get(s.job)?.error;
        throw new VmlinkError(
          'exec',
          `VM ${opts.vm}: the copy of ${s.source} stopped before it caught up${why ? `: ${why}` : ''}`,
          { subject: `vm/${opts.vm}` },
        );
      }
      p.doneBytes += j.offset ?? 0;
      p.totalBytes += j.len ?? 0;
      if (j.ready === true || j.status === 'ready') p.ready++;
    }
    opts.onProgress?.(p);
    if (p.ready === specs.length) return p;
    if (Date.now() > deadline)
      throw new TimeoutError(
        `VM ${opts.vm}: its disks' copy did not catch up within ${opts.timeoutMs} ms (${p.doneBytes} of ${p.totalBytes} bytes)`,
        `vm/${opts.vm}`,
      );
    await sleep(opts.pollMs ?? MIRROR_POLL_MS);
  }
}

/** Waits until job `job` has concluded and dismisses it; throws QEMU's error when it ended with one. */
async function awaitConcluded(
  qmp: Qmp,
  job: string,
  vm: string,
  timeoutMs: number,
  pollMs = MIRROR_POLL_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = (await queryJobs(qmp)).get(job);
    if (!j) return; // dismissed already (or never made)
    if (j.status === 'concluded') {
      await qmp.execute('job-dismiss', { id: job }).catch(() => {});
      if (j.error)
        throw new VmlinkError('exec', `VM ${vm}: block job ${job} failed: ${j.error}`, {
          subject: `vm/${vm}`,
        });
      return;
    }
    if (Date.now() > deadline)
      throw new TimeoutError(`VM ${vm}: block job ${job} did not end within ${timeoutMs} ms`, `vm/${vm}`);
    await sleep(pollMs);
  }
}

/** Pivots a READY mirror: the device now reads and writes the target; the source node is no longer used. */
export async function pivotMirror(qmp: Qmp, spec: MirrorSpec, vm: string, timeoutMs: number): Promise<void> {
  await qmp.execute('job-complete', { id: spec.job });
  await awaitConcluded(qmp, spec.job, vm, timeoutMs);
}

/**
 * Ends READY mirrors leaving each target a consistent copy as of now (`block-job-cancel`, not forced: the guest must
 * be paused, as at a migration's switch-over, for the copy to be the final state); the source stays in use.
 */
export async function finishMirrorsAsCopies(
  qmp: Qmp,
  specs: readonly MirrorSpec[],
  vm: string,
  timeoutMs: number,
): Promise<void> {
  for (const s of specs) await qmp.execute('block-job-cancel', { device: s.job });
  // The guest is paused meanwhile (a migration's switch-over): every poll interval is downtime.
  for (const s of specs) await awaitConcluded(qmp, s.job, vm, timeoutMs, FINISH_POLL_MS);
}

/** Rollback: cancels the mirrors at once (force) and dismisses them; errors are ignored (a job may not exist). */
export async function abortMirrors(qmp: Qmp, specs: readonly MirrorSpec[], vm: string): Promise<void> {
  for (const s of specs)
    await qmp.execute('block-job-cancel', { device: s.job, force: true }).catch(() => {});
  for (const s of specs) await awaitConcluded(qmp, s.job, vm, 30_000).catch(() => {});
}
