// Sealing threads for a backup or restore job: a chunk's id (HMAC-SHA256), its sealing (zstd, AES-256-GCM, checksum)
// and opening are CPU work of several ms per 4 MiB chunk each; on the job's own thread they serialise behind each
// other and behind the NBD reads. A few worker threads under the same key do them in parallel while the job's thread
// only moves bytes. Buffers handed in are moved to a thread (no copy): use the ones the promises give back.
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { fromErrorBody, InvalidStateError } from '../../shared/errors.js';
import { type ChunkCodec, type ChunkKeys, inlineCodec } from './pipeline.js';
import { movable, type SealOp, type SealReply, type SealRequest } from './seal-protocol.js';

/** Most sealing threads of one job (more gain nothing past the machine's cores and hold 4 MiB chunks each). */
export const SEAL_THREADS_MAX = 4;

/** A key that can be handed to this process's sealing threads (shared/backup-crypto.ts's BackupKeySet). */
export interface ThreadableKeys {
  readonly name: string;
  rawKeyForWorkers(): Buffer;
}

/** A job's codec, closed when the job ends. */
export type JobCodec = ChunkCodec & { close(): Promise<void> };

/** Sealing threads for `keys` when they can be handed to threads, else the work on the caller's thread. */
export async function jobCodec(keys: ChunkKeys & Partial<ThreadableKeys>): Promise<JobCodec> {
  if (typeof keys.rawKeyForWorkers === 'function' && typeof keys.name === 'string')
    return SealWorkers.start(keys as ThreadableKeys);
  return { ...inlineCodec(keys), close: async () => {} };
}

/**
 * The worker's module beside this one: compiled `.js` under dist/ (the agent); from source (tests, bench/) a
 * bootstrap that loads the `.ts` through tsx's API, since a worker thread does not inherit its parent's loader.
 */
function workerEntry(): URL {
  if (!fileURLToPath(import.meta.url).endsWith('.ts')) return new URL('./seal-worker.js', import.meta.url);
  const tsxApi = pathToFileURL(
    join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist/esm/api/index.mjs'),
  );
  const worker = new URL('./seal-worker.ts', import.meta.url);
  const boot = [
    `import { tsImport } from ${JSON.stringify(tsxApi.href)};`,
    `await tsImport(${JSON.stringify(worker.href)}, ${JSON.stringify(import.meta.url)});`,
  ].join('\n');
  return new URL(`data:text/javascript,${encodeURIComponent(boot)}`);
}

interface Job {
  resolve: (r: { id?: string; buf: Buffer }) => void;
  reject: (e: Error) => void;
}

interface Thread {
  worker: Worker;
  inFlight: number;
}

export class SealWorkers implements JobCodec {
  private readonly jobs = new Map<number, Job>();
  private seq = 0;
  private failure: Error | undefined;
  private closed = false;

  private constructor(private readonly threads: Thread[]) {
    for (const t of threads) {
      t.worker.on('message', (r: SealReply) => this.settle(t, r));
      t.worker.on('error', (e) => this.fail(e));
      t.worker.on('exit', (code) => {
        if (!this.closed) this.fail(new InvalidStateError(`a sealing thread exited (code ${code})`));
      });
    }
  }

  /** Starts `count` threads (default: the machine's cores, at most SEAL_THREADS_MAX) holding `keys`. */
  static async start(
    keys: ThreadableKeys,
    count = Math.min(availableParallelism(), SEAL_THREADS_MAX),
  ): Promise<SealWorkers> {
    const url = workerEntry();
    const n = Math.max(1, Math.min(count, SEAL_THREADS_MAX));
    const key = keys.rawKeyForWorkers();
    const started: Worker[] = [];
    try {
      // Started together; each says it is ready once its key set is derived.
      await Promise.all(
        Array.from({ length: n }, () => {
          const worker = new Worker(url, { workerData: { key, name: keys.name } });
          started.push(worker);
          return new Promise<void>((resolve, reject) => {
            worker.once('error', reject);
            worker.once('exit', (code) => reject(new Error(`exited with code ${code}`)));
            worker.once('message', () => {
              worker.removeAllListeners('error').removeAllListeners('exit');
              resolve();
            });
          });
        }),
      );
    } catch (e) {
      await Promise.all(started.map((w) => w.terminate()));
      throw new InvalidStateError(`the backup job's sealing threads did not start: ${(e as Error).message}`);
    } finally {
      key.fill(0);
    }
    return new SealWorkers(started.map((worker) => ({ worker, inFlight: 0 })));
  }

  async identify(plain: Buffer): Promise<{ id: string; plain: Buffer }> {
    const r = await this.run('identify', plain);
    return { id: r.id!, plain: r.buf };
  }

  async seal(id: string, plain: Buffer): Promise<Buffer> {
    return (await this.run('seal', plain, id)).buf;
  }

  async open(id: string, blob: Buffer): Promise<Buffer> {
    return (await this.run('open', blob, id)).buf;
  }

  /** Stops the threads; work still in flight is refused. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail(new InvalidStateError('the sealing threads were closed'));
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }

  private run(op: SealOp, buf: Buffer, id?: string): Promise<{ id?: string; buf: Buffer }> {
    if (this.failure) return Promise.reject(this.failure);
    const thread = this.threads.reduce((a, b) => (b.inFlight < a.inFlight ? b : a));
    const seq = ++this.seq;
    const mv = movable(buf);
    return new Promise((resolve, reject) => {
      this.jobs.set(seq, { resolve, reject });
      thread.inFlight++;
      const req: SealRequest = { seq, op, ...(id ? { id } : {}), ...mv };
      thread.worker.postMessage(req, [mv.ab]);
    });
  }

  private settle(t: Thread, r: SealReply): void {
    const job = this.jobs.get(r.seq);
    if (!job) return;
    this.jobs.delete(r.seq);
    t.inFlight--;
    if (r.ok) job.resolve({ ...(r.id ? { id: r.id } : {}), buf: Buffer.from(r.ab, r.offset, r.length) });
    else job.reject(r.vmlink ? fromErrorBody(r.error) : new Error(r.error.error.message));
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const job of this.jobs.values()) job.reject(this.failure);
    this.jobs.clear();
    for (const t of this.threads) t.inFlight = 0;
  }
}
