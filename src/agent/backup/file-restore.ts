// One file out of a snapshot (docs/backup.md, "Restore", `--file`): the disk (or only its partition's range) is
// written to a sparse raw file in a root-only directory, and `debugfs -c` (e2fsprogs) reads the file out of its
// ext2/3/4 filesystem in userspace: nothing is mounted, no kernel filesystem code runs on the guest's data, no host
// path is followed. The partition table is read here (MBR primary partitions, GPT), at 512-byte sectors.
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../../exec/runner.js';
import { BACKUP_FILE_RESTORE_MAX_BYTES } from '../../shared/backup.js';
import {
  CorruptDataError,
  InvalidRequestError,
  NotFoundError,
  UnsupportedError,
} from '../../shared/errors.js';

const SECTOR = 512;

/** The byte range of partition `n` (1-based) of a disk whose first bytes are `head`. */
export function partitionRange(
  head: Buffer,
  n: number,
  diskSize: number,
): { offset: number; length: number } {
  const check = (offset: number, length: number, what: string) => {
    if (length <= 0 || offset < SECTOR || offset + length > diskSize)
      throw new CorruptDataError(
        `${what} lies outside the disk (${offset}+${length} of ${diskSize} bytes)`,
        `partition/${n}`,
      );
    return { offset, length };
  };
  if (head.length < 2 * SECTOR || head.readUInt16LE(510) !== 0xaa55)
    throw new InvalidRequestError(
      `the disk has no partition table (no MBR signature): leave out the partition`,
      `partition/${n}`,
    );
  const entry = (i: number) => 446 + 16 * i;
  const protective = [0, 1, 2, 3].some((i) => head[entry(i) + 4] === 0xee);
  if (!protective) {
    if (n > 4)
      throw new UnsupportedError(`partition ${n}: logical (extended) MBR partitions are not read; only 1-4`);
    const e = entry(n - 1);
    if (head[e + 4] === 0) throw new NotFoundError('partition', String(n));
    return check(head.readUInt32LE(e + 8) * SECTOR, head.readUInt32LE(e + 12) * SECTOR, `MBR partition ${n}`);
  }
  const gpt = head.subarray(SECTOR, 2 * SECTOR);
  if (gpt.toString('latin1', 0, 8) !== 'EFI PART')
    throw new CorruptDataError(
      'the disk has a protective MBR but no GPT header at sector 1',
      `partition/${n}`,
    );
  const entriesAt = Number(gpt.readBigUInt64LE(72)) * SECTOR;
  const count = gpt.readUInt32LE(80);
  const size = gpt.readUInt32LE(84);
  if (size < 128 || size > 4096)
    throw new CorruptDataError(`GPT entry size ${size} is not sane`, `partition/${n}`);
  if (n > count) throw new NotFoundError('partition', String(n));
  const at = entriesAt + (n - 1) * size;
  if (at + 128 > head.length)
    throw new UnsupportedError(`GPT entries lie beyond the disk's first ${head.length} bytes; not read`);
  const e = head.subarray(at, at + 128);
  if (e.subarray(0, 16).every((b) => b === 0)) throw new NotFoundError('partition', String(n));
  const first = Number(e.readBigUInt64LE(32));
  const last = Number(e.readBigUInt64LE(40));
  return check(first * SECTOR, (last - first + 1) * SECTOR, `GPT partition ${n}`);
}

/** Refuses a path debugfs's request parser cannot carry intact (it splits on spaces outside double quotes). */
function debugfsPath(path: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/["\\\x00-\x1f\x7f]/.test(path))
    throw new InvalidRequestError(
      `file path ${JSON.stringify(path)} holds a double quote, backslash or control character: not supported by file restore`,
    );
  return `"${path}"`;
}

/**
 * Reads `path` out of the ext2/3/4 filesystem in `image` (a raw file) into `out` with `debugfs -c`; at most
 * BACKUP_FILE_RESTORE_MAX_BYTES. Returns its size.
 */
export async function debugfsDump(
  runner: Runner,
  image: string,
  path: string,
  out: string,
  maxBytes = BACKUP_FILE_RESTORE_MAX_BYTES,
): Promise<number> {
  const quoted = debugfsPath(path);
  // debugfs answers 0 even when the path is missing: its stderr says why, its stdout has the inode's stat.
  const st = await runner.run(['debugfs', '-c', '-R', `stat ${quoted}`, image], {
    allowFailure: true,
    timeoutMs: 120_000,
    maxOutputBytes: 256 * 1024,
  });
  const type = /Type:\s*(\S+)/.exec(st.stdout)?.[1];
  const size = /\bSize:\s*(\d+)/.exec(st.stdout)?.[1];
  if (!type || size === undefined) {
    const why = st.stderr
      .split('\n')
      .filter((l) => l && !/^debugfs \d|catastrophic mode/.test(l))
      .join('; ');
    if (/not found|File not found/i.test(why)) throw new NotFoundError('file in the snapshot', path);
    throw new InvalidRequestError(
      `cannot read ${path} from the snapshot's filesystem (ext2/3/4 only): ${why.slice(0, 400) || 'debugfs found no such inode'}`,
    );
  }
  if (type !== 'regular')
    throw new InvalidRequestError(`${path} in the snapshot is a ${type}, not a regular file`);
  if (Number(size) > maxBytes)
    throw new InvalidRequestError(
      `${path} in the snapshot has ${size} bytes, more than file restore returns (${maxBytes}): restore the disk instead`,
    );
  const r = await runner.run(['debugfs', '-c', '-R', `dump -p ${quoted} ${out}`, image], {
    allowFailure: true,
    timeoutMs: 300_000,
    maxOutputBytes: 256 * 1024,
  });
  const got = await stat(out).catch(() => undefined);
  if (!got?.isFile())
    throw new InvalidRequestError(`debugfs could not dump ${path}: ${r.stderr.slice(0, 400)}`);
  if (got.size > maxBytes)
    throw new InvalidRequestError(`${path} came out larger than ${maxBytes} bytes: refused`);
  return got.size;
}

/** A sparse raw file written at offsets (chunks outside it are skipped by the caller). */
export async function openSparse(path: string, length: number) {
  const fh = await open(path, 'wx', 0o600);
  await fh.truncate(length);
  return fh;
}

export const imagePaths = (dir: string) => ({ image: join(dir, 'disk.raw'), out: join(dir, 'file.out') });
