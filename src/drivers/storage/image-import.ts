// What an image imported into a pool may be: an ISO 9660 image (copied as it is), or a qcow2 or raw image that names
// no other file. Other formats are refused: vmdk descriptors and the like name further files, which the root agent's
// qemu-img would read, and so would a backing or data file named in a qcow2 header (a raw disk image whose guest
// wrote such a header probes as qcow2: the same checks catch it).
import type { Runner } from '../../exec/runner.js';
import { InvalidRequestError, NotFoundError } from '../../shared/errors.js';
import { DISK_SIZE_MIB_MAX } from '../../shared/limits.js';
import { openRegular } from '../../shared/safe-file.js';
import { imageInfo } from './qemu-img.js';

/** An ISO 9660 image has `CD001` at byte 32769. */
const ISO_MAGIC_OFFSET = 32_769;
const MAX_BYTES = DISK_SIZE_MIB_MAX * 1024 * 1024;

/** What an import source is, once checked. */
export interface ImportSource {
  format: 'iso' | 'qcow2' | 'raw';
  /** The size the guest sees (an ISO's and a raw image's file size, a qcow2's virtual size). */
  virtualBytes: number;
}

/**
 * Checks the file an import starts from (a regular file, not a link) and says what it is: `iso`, or the `qcow2` or
 * `raw` format qemu-img found (the only probe vmlink lets it make).
 */
export async function checkImportSource(
  runner: Runner,
  sourcePath: string,
  signal?: AbortSignal,
): Promise<ImportSource> {
  const src = await openRegular(sourcePath);
  if (!src) throw new NotFoundError('file', sourcePath);
  try {
    if (src.st.size > MAX_BYTES)
      throw new InvalidRequestError(`${sourcePath} is larger than ${DISK_SIZE_MIB_MAX} MiB`, sourcePath);
    const magic = Buffer.alloc(5);
    await src.fh.read(magic, 0, 5, ISO_MAGIC_OFFSET);
    if (magic.toString('latin1') === 'CD001') return { format: 'iso', virtualBytes: src.st.size };
  } finally {
    await src.fh.close();
  }
  const info = await imageInfo(runner, sourcePath, undefined, signal);
  if (info.format !== 'qcow2' && info.format !== 'raw')
    throw new InvalidRequestError(
      `${sourcePath} is a ${info.format} image: vmlink imports qcow2, raw and ISO images (convert it with qemu-img first)`,
      sourcePath,
    );
  if (info['backing-filename'] !== undefined || info['format-specific']?.data?.['data-file'] !== undefined)
    throw new InvalidRequestError(
      `${sourcePath} names other files (a backing or data file): flatten it first (qemu-img convert -O qcow2)`,
      sourcePath,
    );
  if (info.encrypted)
    throw new InvalidRequestError(`${sourcePath} is encrypted: decrypt it before importing it`, sourcePath);
  if (info['virtual-size'] > MAX_BYTES)
    throw new InvalidRequestError(`${sourcePath} is larger than ${DISK_SIZE_MIB_MAX} MiB`, sourcePath);
  return { format: info.format, virtualBytes: info['virtual-size'] };
}
