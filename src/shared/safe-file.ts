// Files in directories another user controls (a VM's QEMU writes its run directory): opened without following a
// link and without blocking on a FIFO, accepted only as regular files, read only up to a cap, removed without
// following links. The capped whole-file readers for small state files live in state-file.ts.
import { constants, type Stats } from 'node:fs';
import { type FileHandle, lstat, open, rm, writeFile } from 'node:fs/promises';
import { VmlinkError } from './errors.js';

/** A file in a VM-owned place is not what it must be (a link, a FIFO, a device): refused, never followed. */
export class UnsafeFileError extends VmlinkError {
  constructor(path: string, problem: string, cause?: unknown) {
    super('invalid-state', `${path}: ${problem}, refused`, { subject: path, ...(cause ? { cause } : {}) });
  }
}

// O_NOFOLLOW: a planted link fails with ELOOP; O_NONBLOCK: a FIFO cannot stall the open.
const SAFE_READ = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const SAFE_RW = constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** Opens a regular file without following a link or blocking; undefined when missing; `UnsafeFileError` otherwise. */
export async function openRegular(
  path: string,
  mode: 'read' | 'readwrite' = 'read',
): Promise<{ fh: FileHandle; st: Stats } | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, mode === 'read' ? SAFE_READ : SAFE_RW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw new UnsafeFileError(path, 'is a symbolic link', e);
    throw e;
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new UnsafeFileError(path, 'is not a regular file');
  }
  return { fh, st };
}

/** The last `maxBytes` of a regular file (no link followed, no FIFO waited on); '' when it is missing. */
export async function readTail(path: string, maxBytes: number): Promise<string> {
  const f = await openRegular(path);
  if (!f) return '';
  try {
    return (await tailOf(f.fh, f.st.size, maxBytes)).toString('utf8');
  } finally {
    await f.fh.close();
  }
}

async function tailOf(fh: FileHandle, size: number, maxBytes: number): Promise<Buffer> {
  const want = Math.max(0, Math.min(maxBytes, size));
  const buf = Buffer.alloc(want);
  const { bytesRead } = await fh.read(buf, 0, want, size - want);
  return buf.subarray(0, bytesRead);
}

/**
 * Keeps a log that another process appends to (through a descriptor it was given) under `maxBytes`: past the cap,
 * its last `maxBytes` move to `<path>.1` (replacing the older one) and the log is truncated in place, so the writer's
 * descriptor stays valid. Returns whether it rotated. Neither file is followed if it is a link.
 */
export async function rotateLog(path: string, maxBytes: number): Promise<boolean> {
  const f = await openRegular(path, 'readwrite');
  if (!f) return false;
  try {
    if (f.st.size <= maxBytes) return false;
    const kept = await tailOf(f.fh, f.st.size, maxBytes);
    const old = `${path}.1`;
    await rm(old, { force: true }); // unlinks a planted link or FIFO itself, never its target
    await writeFile(old, kept, {
      flag: constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL,
      mode: 0o600,
    });
    await f.fh.truncate(0);
    return true;
  } finally {
    await f.fh.close();
  }
}

/**
 * Removes `path` and everything below it without following a link: a link is removed, never its target. The
 * caller makes sure no other user can still change the tree (an exited QEMU, a directory taken back by root),
 * since a walk by path cannot be atomic against a writer that swaps entries.
 */
export async function removeTree(path: string): Promise<void> {
  const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!st) return;
  // node's rm walks with lstat and unlinks links; a link as the top is unlinked, not descended.
  await rm(path, { recursive: st.isDirectory(), force: true });
}
