// File-system and id helpers of the directory chunk store (chunk-store.ts): missing-tolerant stat and readdir, a
// directory fsync, a liveness check of a tmp/ writer's pid, and the checks that make ids safe as file names.
import type { Stats } from 'node:fs';
import { constants, lstatSync } from 'node:fs';
import { lstat, open, readdir } from 'node:fs/promises';
import { type ChunkId, type SnapshotId, SnapshotIdSchema } from '../../shared/backup.js';
import { InvalidRequestError } from '../../shared/errors.js';

/** What a chunk's file name must be: its id. */
export const CHUNK_NAME = /^[0-9a-f]{64}$/;
export const isCode = (e: unknown, ...codes: string[]) =>
  codes.includes((e as NodeJS.ErrnoException)?.code ?? '');

export async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (e) {
    if (isCode(e, 'ENOENT', 'ENOTDIR')) return undefined;
    throw e;
  }
}

/** `lstatOrUndefined`, synchronously (for `inSyncSlices`). */
export function lstatSyncOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (e) {
    if (isCode(e, 'ENOENT', 'ENOTDIR')) return undefined;
    throw e;
  }
}

/** Calls made per turn of the event loop by `inSyncSlices` (a few ms of metadata calls). */
const SYNC_SLICE = 256;

/**
 * `fn` over `items` synchronously, SYNC_SLICE calls per turn of the event loop (other work runs between the slices).
 * For cheap metadata calls on every chunk of a disk (a 1 MiB-chunked 2 GiB disk has 2,048): through the thread pool
 * each lstat or lutimes cost 2-4x the call itself (2,048 of them: 45-80 ms against 15-30 ms so, load 4).
 */
export async function inSyncSlices<T, R>(items: readonly T[], fn: (item: T) => R): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += SYNC_SLICE) {
    if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    for (const item of items.slice(i, i + SYNC_SLICE)) out.push(fn(item));
  }
  return out;
}

export async function readdirOrEmpty(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch (e) {
    if (isCode(e, 'ENOENT', 'ENOTDIR')) return [];
    throw e;
  }
}

export async function fsyncDir(path: string): Promise<void> {
  const dir = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return isCode(e, 'EPERM');
  }
}

/** `id` as a chunk id safe to use as a file name, else `InvalidRequestError`. */
export function checkChunkId(id: unknown): ChunkId {
  if (typeof id !== 'string' || !CHUNK_NAME.test(id)) {
    throw new InvalidRequestError(
      `chunk id ${JSON.stringify(id)?.slice(0, 80)} is not 64 lowercase hex digits`,
    );
  }
  return id;
}

/** `id` as a snapshot id safe to use in file names, else `InvalidRequestError`. */
export function checkSnapshotId(id: unknown): SnapshotId {
  const r = SnapshotIdSchema.safeParse(id);
  if (!r.success) {
    throw new InvalidRequestError(
      `snapshot id ${JSON.stringify(id)?.slice(0, 80)}: ${r.error.issues[0]!.message}`,
    );
  }
  return r.data;
}
