// The raw LUN files of an iscsi pool: the pool's directory, a volume's file, the volumes it holds, sizes, and files
// made sparse or converted into place (never half-written under a volume's name).
import { constants } from 'node:fs';
import { open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../../exec/runner.js';
import { InvalidRequestError, VmlinkError } from '../../shared/errors.js';
import { DISK_SIZE_MIB_MAX } from '../../shared/limits.js';
import { POOL_VOLUMES_MAX, type PoolConfig, volumeFileName } from '../../shared/storage.js';
import type { OpContext } from '../network/types.js';
import { VOLUME_NAME } from './qcow2-volumes.js';

/** Bytes in a MiB. */
export const MiB = 1024 * 1024;
/** A pool path tgtd can take in a `path=` parameter and nothing can make escape. */
const POOL_PATH = /^\/[\w./-]{1,250}$/;

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Refuses a pool that is not iscsi or whose path tgtd could not take safely. */
export function checkIscsiPool(pool: PoolConfig): void {
  if (pool.type !== 'iscsi') throw new InvalidRequestError(`pool ${pool.name} is ${pool.type}, not iscsi`);
  if (!POOL_PATH.test(pool.path) || pool.path.split('/').includes('..'))
    throw new InvalidRequestError(`pool ${pool.name}: path ${JSON.stringify(pool.path)} is not usable`);
}

/** `<pool.path>/<name>.img`; refuses a name outside the spec's pattern. */
export function volumeFile(pool: PoolConfig, name: string): string {
  if (!VOLUME_NAME.test(name))
    throw new InvalidRequestError(
      `volume name ${JSON.stringify(name)} must match ${VOLUME_NAME}`,
      `volume/${name}`,
    );
  return join(pool.path, volumeFileName(name, 'raw'));
}

/** Names of the volumes (files `*.img`) in the pool's directory. */
export async function volumeNames(pool: PoolConfig): Promise<string[]> {
  let files: string[];
  try {
    files = await readdir(pool.path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const names = files
    .filter((f) => f.endsWith('.img'))
    .map((f) => f.slice(0, -'.img'.length))
    .filter((n) => VOLUME_NAME.test(n))
    .sort();
  if (names.length > POOL_VOLUMES_MAX)
    throw new VmlinkError('internal', `pool ${pool.name} holds more than ${POOL_VOLUMES_MAX} volumes`);
  return names;
}

/** Creates `file` of `sizeMiB`, sparse, root's alone (0600); never takes over a file that appeared meanwhile. */
export async function createSparse(file: string, sizeMiB: number): Promise<void> {
  // Sparse: truncate allocates nothing; O_EXCL never takes over a file that appeared meanwhile.
  const f = await open(
    file,
    constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await f.truncate(sizeMiB * MiB);
  } finally {
    await f.close();
  }
}

/** `qemu-img convert -O raw` into a temporary file renamed to the volume's once complete. */
export async function convertInto(
  runner: Runner,
  file: string,
  source: string[],
  ctx?: OpContext,
): Promise<void> {
  const tmp = `${file}.part`;
  await rm(tmp, { force: true });
  try {
    await runner.run(
      ['qemu-img', 'convert', '-q', ...source, '-O', 'raw', tmp],
      ctx?.signal ? { signal: ctx.signal } : {},
    );
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Refuses a size that is not a whole number of MiB within the disk limits. */
export function checkSize(name: string, sizeMiB: number): void {
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1 || sizeMiB > DISK_SIZE_MIB_MAX)
    throw new InvalidRequestError(
      `volume ${name}: size must be a whole number of MiB from 1 to ${DISK_SIZE_MIB_MAX}`,
      `volume/${name}`,
    );
}
