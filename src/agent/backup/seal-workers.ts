// Sealing threads for backup and restore jobs: a chunk's id (HMAC-SHA256), its sealing (zstd, AES-256-GCM, checksum)
// and opening are CPU work of several ms per 4 MiB chunk each; on a job's own thread they serialise behind each other
// and behind the NBD reads. A few worker threads do them in parallel while the job's thread only moves bytes. The
// threads are started with the first job and stopped after a minute without one; each job hands them its key for
// its own duration. Buffers handed in are moved to a thread (no copy): use the ones the promises give back.
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { markSealedHere } from '../../shared/backup-sealed.js';
import { fromErrorBody, InvalidStateError } from '../../shared/errors.js';
import { type ChunkCodec, type ChunkKeys, inlineCodec } from './pipeline.js';
import { movable, type SealOp, type SealReply, type SealRequest } from './seal-protocol.js';

/** Most sealing threads (more gain nothing past the machine's cores, and each holds 4 MiB chunks). */
export const SEAL_THREADS_MAX = 4;
/** How long idle threads are kept for the next job. */
export const SEAL_THREADS_IDLE_MS = 60_000;

/** A key that can be handed to this process's sealing threads (shared/backup-crypto.ts's BackupKeySet). */
export interface ThreadableKeys {
  readonly name: string;
  rawKeyForWorkers(): Buffer;
}

/** A job's codec: the threads under the job's key until `close`. */
export type JobCodec = ChunkCodec & { close(): Promise<void> };

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

interface Pending {
  op: SealOp | 'key';
  resolve: (r: WorkReply) => void;
  reject: (e: Error) => void;
}

/** What a thread answered: the id, the output buffer, the input buffer given back (a seal with a spare). */
interface WorkReply {
  id?: string;
  buf?: Buffer;
  input?: Buffer;
}

/** One set of started threads; a thread's failure ends the set (the next job starts a new one). */
class ThreadSet {
  readonly pending = new Map<number, Pending>();
  readonly inFlight: number[];
  failure: Error | undefined;
  private busy = 0;

  constructor(readonly workers: Worker[]) {
    this.inFlight = workers.map(() => 0);
    workers.forEach((w, i) => {
      w.unref();
      w.on('message', (r: SealReply) => this.settle(i, r));
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => this.fail(new InvalidStateError(`a sealing thread exited (code ${code})`)));
    });
  }

  /** Sends `req` to thread `i` (the least busy when undefined); resolves with its reply. */
  send(req: SealRequest & { seq: number }, transfer: ArrayBuffer[], i?: number): Promise<WorkReply> {
    if (this.failure) return Promise.reject(this.failure);
    const t = i ?? this.inFlight.indexOf(Math.min(...this.inFlight));
    return new Promise((resolve, reject) => {
      this.pending.set(req.seq, { op: req.kind === 'work' ? req.op : 'key', resolve, reject });
      this.inFlight[t]!++;
      // Threads keep the process alive only while they have work (idle ones must not hold an exiting process).
      if (this.busy++ === 0) for (const w of this.workers) w.ref();
      this.workers[t]!.postMessage(req, transfer);
    });
  }

  post(req: SealRequest): void {
    if (!this.failure) for (const w of this.workers) w.postMessage(req);
  }

  async stop(): Promise<void> {
    this.fail(new InvalidStateError('the sealing threads were stopped'));
    // The loop is held until they are gone: idle threads are unref'ed, and a terminating thread does not hold it
    // either, so a caller awaiting this (a cleanup before the process ends) would be cut off mid-way.
    const hold = setInterval(() => {}, 1000);
    try {
      await Promise.all(this.workers.map((w) => w.terminate()));
    } finally {
      clearInterval(hold);
    }
  }

  private settle(i: number, r: SealReply): void {
    const p = this.pending.get(r.seq);
    if (!p) return;
    this.pending.delete(r.seq);
    this.inFlight[i]!--;
    if (--this.busy === 0) for (const w of this.workers) w.unref();
    if (!r.ok) p.reject(r.vmlink ? fromErrorBody(r.error) : new Error(r.error.error.message));
    else {
      const buf = r.ab ? Buffer.from(r.ab, r.offset, r.length) : undefined;
      // A thread's sealed blob is as much this process's as one sealed here (the store skips its checksum).
      if (buf && p.op === 'seal') markSealedHere(buf);
      p.resolve({
        ...(r.id ? { id: r.id } : {}),
        ...(buf ? { buf } : {}),
        ...(r.input ? { input: Buffer.from(r.input) } : {}),
      });
    }
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
    this.busy = 0;
    for (const w of this.workers) w.unref();
  }
}

/** The sealing threads of a process (an agent has one: `sealThreads`). */
export class SealThreads {
  private set: Promise<ThreadSet> | undefined;
  private seq = 0;
  private kid = 0;
  private users = 0;
  private idle: NodeJS.Timeout | undefined;

  constructor(private readonly opts: { count?: number; idleMs?: number } = {}) {}

  /** A codec under `keys` for one job: the key is derived on every thread, and forgotten at `close`. */
  async codecFor(keys: ThreadableKeys): Promise<JobCodec> {
    this.users++;
    clearTimeout(this.idle);
    try {
      const set = await this.threads();
      const kid = ++this.kid;
      const raw = keys.rawKeyForWorkers();
      const key = new Uint8Array(raw); // an exact-size copy: a pooled Buffer would clone its whole pool slab
      raw.fill(0);
      try {
        await Promise.all(
          set.workers.map((_, i) =>
            set.send({ kind: 'key', seq: ++this.seq, kid, key, name: keys.name }, [], i),
          ),
        );
      } finally {
        key.fill(0);
      }
      return this.codec(set, kid);
    } catch (e) {
      this.release();
      throw e;
    }
  }

  /** Stops the threads now (work in flight is refused). */
  async close(): Promise<void> {
    clearTimeout(this.idle);
    const set = this.set;
    this.set = undefined;
    if (set) await (await set.catch(() => undefined))?.stop();
  }

  private codec(set: ThreadSet, kid: number): JobCodec {
    let closed = false;
    const work = async (op: SealOp, buf: Buffer, id?: string, spare?: Buffer) => {
      if (closed) throw new InvalidStateError('this job has closed its sealing threads');
      // `spare` whole and holding `buf` at its start: the caller's own buffer, moved whole (identify: it comes back
      // whole; seal: the blob is built in it, in place). Else `buf` moves alone (copied when only a view).
      const whole = (b: Buffer | undefined): b is Buffer =>
        b !== undefined &&
        b.byteOffset === 0 &&
        b.byteLength === b.buffer.byteLength &&
        b.buffer instanceof ArrayBuffer;
      const inPlace = whole(spare) && buf.buffer === spare.buffer && buf.byteOffset === 0;
      const mv = inPlace
        ? { ab: spare.buffer as ArrayBuffer, offset: 0, length: buf.byteLength }
        : movable(buf);
      // A spare is moved only when it is a whole buffer of its own (and not the input's): else it stays here.
      const sp =
        !inPlace && whole(spare) && spare.buffer !== mv.ab ? (spare.buffer as ArrayBuffer) : undefined;
      const transfer = sp ? [mv.ab, sp] : [mv.ab];
      return set.send(
        {
          kind: 'work',
          seq: ++this.seq,
          kid,
          op,
          ...(id ? { id } : {}),
          ...mv,
          ...(sp ? { spare: sp } : {}),
          ...(inPlace && op === 'seal' ? { inPlace } : {}),
        },
        transfer,
      );
    };
    return {
      identify: async (plain, home) => {
        const r = await work('identify', plain, undefined, home);
        return { id: r.id!, plain: r.buf! };
      },
      seal: async (id, plain) => (await work('seal', plain, id)).buf!,
      sealInto: async (id, plain, spare) => {
        const r = await work('seal', plain, id, spare);
        return { blob: r.buf!, ...(r.input ? { plain: r.input } : {}) };
      },
      open: async (id, blob) => (await work('open', blob, id)).buf!,
      close: async () => {
        if (closed) return;
        closed = true;
        set.post({ kind: 'forget', kid });
        this.release();
      },
    };
  }

  private release(): void {
    if (--this.users > 0) return;
    this.idle = setTimeout(() => void this.close(), this.opts.idleMs ?? SEAL_THREADS_IDLE_MS);
    this.idle.unref();
  }

  /** The running thread set, started (or restarted after a failure) when needed. */
  private async threads(): Promise<ThreadSet> {
    const current = await this.set?.catch(() => undefined);
    if (current && !current.failure) return current;
    this.set = startThreads(Math.min(this.opts.count ?? availableParallelism(), SEAL_THREADS_MAX));
    this.set.catch(() => {
      this.set = undefined;
    });
    return this.set;
  }
}

async function startThreads(count: number): Promise<ThreadSet> {
  const url = workerEntry();
  const started: Worker[] = [];
  try {
    // Started together; each says it is ready once its modules are loaded.
    await Promise.all(
      Array.from({ length: Math.max(1, count) }, () => {
        const worker = new Worker(url);
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
    throw new InvalidStateError(`the backup sealing threads did not start: ${(e as Error).message}`);
  }
  return new ThreadSet(started);
}

/** This process's sealing threads. */
export const sealThreads = new SealThreads();

/** A job's codec: the process's sealing threads when `keys` can be handed to them, else the caller's thread. */
export async function jobCodec(keys: ChunkKeys & Partial<ThreadableKeys>): Promise<JobCodec> {
  if (typeof keys.rawKeyForWorkers === 'function' && typeof keys.name === 'string')
    return sealThreads.codecFor(keys as ThreadableKeys);
  return { ...inlineCodec(keys), close: async () => {} };
}
