import { Buffer } from 'node:buffer';
import { VmlinkError } from '../shared/errors.js';

/** File type bits of a cpio entry's mode (as in `stat.st_mode`). */
export const S_IFDIR = 0o040000;
/** Regular file type bits. */
export const S_IFREG = 0o100000;
/** Symbolic link type bits. */
export const S_IFLNK = 0o120000;
/** Character device type bits. */
export const S_IFCHR = 0o020000;

/** One member of a newc cpio archive; `path` is relative (no leading `/`), `data` is the link target for symlinks. */
export interface CpioEntry {
  path: string;
  /** Full mode, type bits included. */
  mode: number;
  data: Buffer;
  uid?: number;
  gid?: number;
  mtime?: number;
  /** Device numbers of character/block nodes. */
  rdevMajor?: number;
  rdevMinor?: number;
}

const MAGIC = '070701';
const HEADER_LEN = 110;
const TRAILER = 'TRAILER!!!';

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff)
    throw new VmlinkError('invalid', `cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(len: number): number {
  return (4 - (len % 4)) % 4;
}

function header(e: CpioEntry, ino: number): Buffer {
  const name = Buffer.from(`${e.path}\0`, 'utf8');
  const isDir = (e.mode & 0o170000) === S_IFDIR;
  const fields = [
    ino,
    e.mode,
    e.uid ?? 0,
    e.gid ?? 0,
    isDir ? 2 : 1,
    e.mtime ?? 0,
    e.data.length,
    0,
    0,
    e.rdevMajor ?? 0,
    e.rdevMinor ?? 0,
    name.length,
    0,
  ];
  const head = Buffer.from(MAGIC + fields.map(hex8).join(''), 'ascii');
  return Buffer.concat([head, name, Buffer.alloc(pad4(HEADER_LEN + name.length))]);
}

/** Serialises entries, in the given order, as a newc ("070701") cpio archive with its trailer. */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    if (!e.path || e.path.startsWith('/') || e.path.split('/').includes('..')) {
      throw new VmlinkError('invalid', `bad cpio path ${JSON.stringify(e.path)}`);
    }
    parts.push(header(e, ino++), e.data, Buffer.alloc(pad4(e.data.length)));
  }
  parts.push(header({ path: TRAILER, mode: 0, data: Buffer.alloc(0) }, 0));
  return Buffer.concat(parts);
}

/** Parses a newc cpio archive back into entries (stops at the trailer); used to check archives. */
export function readCpio(buf: Buffer): CpioEntry[] {
  const out: CpioEntry[] = [];
  let off = 0;
  for (;;) {
    if (off + HEADER_LEN > buf.length)
      throw new VmlinkError('invalid', 'cpio archive truncated (no trailer)');
    const magic = buf.toString('ascii', off, off + 6);
    if (magic !== MAGIC)
      throw new VmlinkError('invalid', `bad cpio magic ${JSON.stringify(magic)} at ${off}`);
    const f = (i: number) => Number.parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const [mode, uid, gid, mtime, size, rdevMajor, rdevMinor, nameLen] = [
      f(1),
      f(2),
      f(3),
      f(5),
      f(6),
      f(9),
      f(10),
      f(11),
    ] as [number, number, number, number, number, number, number, number];
    const path = buf.toString('utf8', off + HEADER_LEN, off + HEADER_LEN + nameLen - 1);
    off += HEADER_LEN + nameLen + pad4(HEADER_LEN + nameLen);
    if (path === TRAILER) return out;
    const data = Buffer.from(buf.subarray(off, off + size));
    off += size + pad4(size);
    out.push({ path, mode, uid, gid, mtime, data, rdevMajor, rdevMinor });
  }
}

/** An in-memory file tree that becomes an initramfs; parent directories are created implicitly. */
export class FsTree {
  private readonly entries = new Map<string, CpioEntry>();

  /** Adds a directory (and its parents). */
  dir(path: string, perm = 0o755): this {
    const p = norm(path);
    if (!p) return this;
    const parent = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '';
    if (parent) this.dir(parent);
    const have = this.entries.get(p);
    if (have && (have.mode & 0o170000) !== S_IFDIR)
      throw new VmlinkError('conflict', `${p} exists and is not a directory`);
    if (!have) this.entries.set(p, { path: p, mode: S_IFDIR | perm, data: Buffer.alloc(0) });
    return this;
  }

  /** Adds (or replaces) a regular file. */
  file(path: string, data: Buffer | string, perm = 0o644): this {
    return this.put({ path: norm(path), mode: S_IFREG | perm, data: Buffer.from(data) });
  }

  /** Adds a symbolic link pointing at `target`. */
  symlink(path: string, target: string): this {
    return this.put({ path: norm(path), mode: S_IFLNK | 0o777, data: Buffer.from(target) });
  }

  /** Adds a character device node. */
  charDev(path: string, major: number, minor: number, perm = 0o600): this {
    return this.put({
      path: norm(path),
      mode: S_IFCHR | perm,
      data: Buffer.alloc(0),
      rdevMajor: major,
      rdevMinor: minor,
    });
  }

  /** True if something exists at `path`. */
  has(path: string): boolean {
    return this.entries.has(norm(path));
  }

  /** The entries sorted so that every directory precedes its contents. */
  list(): CpioEntry[] {
    return [...this.entries.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /** The tree as a newc cpio archive. */
  toCpio(): Buffer {
    return writeCpio(this.list());
  }

  private put(e: CpioEntry): this {
    const slash = e.path.lastIndexOf('/');
    if (slash > 0) this.dir(e.path.slice(0, slash));
    const have = this.entries.get(e.path);
    if (have && (have.mode & 0o170000) === S_IFDIR)
      throw new VmlinkError('conflict', `${e.path} is a directory`);
    this.entries.set(e.path, e);
    return this;
  }
}

function norm(path: string): string {
  return path
    .replace(/^\/+/, '')
    .replace(/\/+$/, '')
    .replace(/\/{2,}/g, '/');
}
