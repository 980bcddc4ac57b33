// The backing chain of a qcow2 volume, checked before qemu-img may open it whole. qemu-img follows the backing file
// and the external data file an image names, and the files of an nfs pool are written by its clients (a QEMU on a
// compute host, maybe compromised): a header naming `/etc/shadow` would have the root agent read that file into a
// volume a VM can read. Only `qemu-img info` (which opens no backing file) runs on a link before it is checked.
import { lstat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Runner } from '../../exec/runner.js';
import { InvalidStateError, NotFoundError } from '../../shared/errors.js';
import { UnsafeFileError } from '../../shared/safe-file.js';
import { type ImageInfo, imageInfo } from './qemu-img.js';

/** Longest chain of linked clones (a clone of a clone of ...) qemu-img is allowed to open. */
export const BACKING_CHAIN_MAX = 16;
/** How a backing file must be named: a volume of the same pool, relatively. */
const BACKING_FILE = /^[a-z][a-z0-9-]{0,62}\.qcow2$/;

/**
 * `qemu-img info` of the qcow2 volume file `path` of `pool`, after checking each link of its chain: a regular file
 * (not a link), qcow2, without an external data file, backed (if at all) by a plainly named qcow2 file of the same
 * pool directory with its format recorded (never probed), no loop, at most `BACKING_CHAIN_MAX` deep. `unlocked`:
 * the volume itself must not be open for writing by another process (qemu-img's lock error otherwise).
 */
export async function checkBackingChain(
  runner: Runner,
  pool: { name: string; path: string },
  path: string,
  signal?: AbortSignal,
  unlocked = false,
): Promise<ImageInfo> {
  const volume = basename(path);
  const subject = `volume ${volume.replace(/\.qcow2$/, '')} of pool ${pool.name}`;
  let top: ImageInfo | undefined;
  const seen = new Set<string>([volume]);
  for (let depth = 0; ; depth++) {
    const st = await lstat(path).catch(() => undefined);
    if (!st)
      throw top
        ? new InvalidStateError(`${subject}: its backing file ${path} is missing`, subject)
        : new NotFoundError('volume', `${pool.name}/${volume.replace(/\.qcow2$/, '')}`);
    if (!st.isFile()) throw new UnsafeFileError(path, 'is not a regular file');
    const info = await imageInfo(runner, path, 'qcow2', signal, !(unlocked && depth === 0));
    if (info['format-specific']?.data?.['data-file'] !== undefined)
      throw new InvalidStateError(`${path} names an external data file; refused`, subject);
    top ??= info;
    const backing = info['backing-filename'];
    if (backing === undefined) return top;
    if (!BACKING_FILE.test(backing) || info['backing-filename-format'] !== 'qcow2')
      throw new InvalidStateError(
        `${path} is backed by ${JSON.stringify(backing.slice(0, 100))} (${info['backing-filename-format'] ?? 'format not given'}), which is not a qcow2 volume of pool ${pool.name}; refused`,
        subject,
      );
    if (seen.has(backing) || depth + 1 >= BACKING_CHAIN_MAX)
      throw new InvalidStateError(
        `${subject}: its backing chain loops or is deeper than ${BACKING_CHAIN_MAX}; refused`,
        subject,
      );
    seen.add(backing);
    path = join(pool.path, backing);
  }
}
