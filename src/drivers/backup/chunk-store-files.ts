// File-system and id helpers of the directory chunk store (chunk-store.ts): missing-tolerant stat and readdir, a
// directory fsync, a liveness check of a tmp/ writer's pid, and the checks that make ids safe as file names.
import type { Stats } from 'node:fs';
import { constants } from 'node:fs';
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
