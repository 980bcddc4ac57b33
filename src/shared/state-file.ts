// Files the agent keeps and files others may have written (pidfiles, /proc): read without following links, only
// regular files, never more than a cap; written atomically (temp file, fsync, rename, fsync of the directory).
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { type FileHandle, open, readdir, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { z } from 'zod';
import { VmlinkError } from './errors.js';

/** Default cap of a state file (1 MiB): far above any record vmlink writes, small enough to never hurt. */
export const STATE_FILE_MAX_BYTES = 1 << 20;

/** A state file is unreadable for a reason an operator must look at: a link, not a regular file, too big, corrupt. */
export class StateFileError extends VmlinkError {
  constructor(path: string, problem: string, cause?: unknown) {
    super('internal', `state file ${path}: ${problem}`, { subject: path, ...(cause ? { cause } : {}) });
  }
}

/** Options of the capped readers. */
export interface ReadCappedOptions {
  /** Larger files are refused (default `STATE_FILE_MAX_BYTES`). */
  maxBytes?: number;
}

// O_NOFOLLOW: a link planted in a directory another user can write is never followed; O_NONBLOCK: a FIFO put
// in place of the file cannot block the open.
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
// ESRCH: reading /proc/PID/... of a process that exited in between.
const GONE = new Set(['ENOENT', 'ESRCH']);

function openError(path: string, e: unknown): StateFileError {
  const code = (e as NodeJS.ErrnoException).code;
  return new StateFileError(path, code === 'ELOOP' ? 'is a symbolic link, refused' : (e as Error).message, e);
}

function tooBig(path: string, max: number): StateFileError {
  return new StateFileError(path, `larger than ${max} bytes, refused`);
}

/**
 * The buffers of one capped read: sized from the file's reported size (plus one byte, to see it grew), else (/proc
 * files report 0) 16 KiB at a time; never more than `max + 1` bytes in all. A read of a small file costs a small
 * buffer, not `max` (state files are read many times per report).
 */
class CappedChunks {
  private readonly parts: Buffer[] = [];
  private total = 0;
  private current: Buffer | undefined;

  constructor(
    private readonly path: string,
    private readonly max: number,
    private readonly sizeHint: number,
  ) {}

  /** The buffer for the next read. */
  next(): Buffer {
    const want = this.parts.length === 0 && this.sizeHint > 0 ? this.sizeHint + 1 : 16 * 1024;
    this.current = Buffer.allocUnsafe(Math.max(1, Math.min(want, this.max + 1 - this.total)));
    return this.current;
  }

  /** Records that the last read filled `n` bytes of `next()`'s buffer. */
  got(n: number): void {
    this.parts.push(this.current!.subarray(0, n));
    this.total += n;
    if (this.total > this.max) throw tooBig(this.path, this.max);
  }

  text(): string {
    return Buffer.concat(this.parts, this.total).toString('utf8');
  }
}

/** Reads a regular file as UTF-8 without following a link, refusing more than `maxBytes`; undefined when missing. */
export async function readFileCapped(
  path: string,
  opts: ReadCappedOptions = {},
): Promise<string | undefined> {
  const max = opts.maxBytes ?? STATE_FILE_MAX_BYTES;
  let fh: FileHandle;
  try {
    fh = await open(path, READ_FLAGS);
  } catch (e) {
    if (GONE.has((e as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw openError(path, e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new StateFileError(path, 'is not a regular file, refused');
    const chunks = new CappedChunks(path, max, st.size);
    for (;;) {
      const buf = chunks.next();
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      chunks.got(bytesRead);
    }
    return chunks.text();
  } catch (e) {
    if (GONE.has((e as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw e;
  } finally {
    await fh.close();
  }
}

/** `readFileCapped`, synchronously (for the few callers that are synchronous by design). */
export function readFileCappedSync(path: string, opts: ReadCappedOptions = {}): string | undefined {
  const max = opts.maxBytes ?? STATE_FILE_MAX_BYTES;
  let fd: number;
  try {
    fd = openSync(path, READ_FLAGS);
  } catch (e) {
    if (GONE.has((e as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw openError(path, e);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new StateFileError(path, 'is not a regular file, refused');
    const chunks = new CappedChunks(path, max, st.size);
    for (;;) {
      const buf = chunks.next();
      const got = readSync(fd, buf, 0, buf.length, null);
      if (got === 0) break;
      chunks.got(got);
    }
    return chunks.text();
  } catch (e) {
    if (GONE.has((e as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw e;
  } finally {
    closeSync(fd);
  }
}

/** What a log file gained since byte `offset` (at most `maxBytes` of it, default 64 KiB); '' when it is missing. */
export async function readAppended(path: string, offset: number, maxBytes = 64 * 1024): Promise<string> {
  const fh = await open(path, READ_FLAGS).catch(() => undefined);
  if (!fh) return '';
  try {
    if (!(await fh.stat()).isFile()) return '';
    const buf = Buffer.alloc(maxBytes);
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

const tmpName = (path: string) => `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;

/** Replaces `path` with `data` atomically: readers see the old or the new content, never a torn one, even after a crash. */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number } = {},
): Promise<void> {
  const tmp = tmpName(path);
  const fh = await open(tmp, WRITE_FLAGS, opts.mode ?? 0o600);
  try {
    try {
      await fh.writeFile(data, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  // The rename is durable only once the directory entry is on disk.
  await syncDir(dirname(path));
}

/** Flushes directory `dir`'s entries to disk (a rename or create in it is durable after this). */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Publishes a file written by someone else (a tool's output) at `tmp` as `path`: its data flushed, then renamed,
 * then the directory flushed, so after a crash `path` is either absent or whole.
 */
export async function renameDurably(tmp: string, path: string): Promise<void> {
  const fh = await open(tmp, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await syncDir(dirname(path));
}

/** `writeFileAtomic`, synchronously. */
export function writeFileAtomicSync(
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number } = {},
): void {
  const tmp = tmpName(path);
  const fd = openSync(tmp, WRITE_FLAGS, opts.mode ?? 0o600);
  try {
    try {
      if (typeof data === 'string') writeSync(fd, data, null, 'utf8');
      else writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  const dir = openSync(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

function parseJson<S extends z.ZodType>(path: string, text: string, schema: S): z.output<S> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new StateFileError(path, `not valid JSON (${(e as Error).message})`, e);
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new StateFileError(path, `unexpected content at ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  return r.data;
}

/** Reads a JSON state file and checks it against `schema`; undefined when the file does not exist. */
export async function readJsonFile<S extends z.ZodType>(
  path: string,
  schema: S,
  opts: ReadCappedOptions = {},
): Promise<z.output<S> | undefined> {
  const text = await readFileCapped(path, opts);
  return text === undefined ? undefined : parseJson(path, text, schema);
}

/** `readJsonFile`, synchronously. */
export function readJsonFileSync<S extends z.ZodType>(
  path: string,
  schema: S,
  opts: ReadCappedOptions = {},
): z.output<S> | undefined {
  const text = readFileCappedSync(path, opts);
  return text === undefined ? undefined : parseJson(path, text, schema);
}

/** Writes `value` as pretty JSON, atomically (mode 0600 unless given). */
export function writeJsonFile(path: string, value: unknown, opts: { mode?: number } = {}): Promise<void> {
  return writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, opts);
}

/** `writeJsonFile`, synchronously. */
export function writeJsonFileSync(path: string, value: unknown, opts: { mode?: number } = {}): void {
  writeFileAtomicSync(path, `${JSON.stringify(value, null, 2)}\n`, opts);
}

/** Names of the `<name>.json` records in `dir` (a store of one JSON file per object); a missing `dir` holds none. */
export async function jsonRecordNames(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -'.json'.length));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}
