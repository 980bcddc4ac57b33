// The disk image of bench/backup.ts and the changes made to it between backups: a qcow2 (what vmlink reads, with a
// persistent dirty bitmap) and a raw mirror with the same bytes (what restic and borg read, as they would a raw
// disk image). Every change is made through `qemu-io` on both, from the same pattern files, so the two stay equal
// and the qcow2's enabled bitmaps mark what changed.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, ftruncateSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const MiB = 1024 * 1024;
/** Size of the pieces the image's data is made of: each random or compressible. */
const BLOCK = 64 * 1024;

/** A small seeded PRNG (xorshift32): the layout and the change offsets are the same for every run of a size. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

/** What the image holds. */
export interface ImageFacts {
  sizeBytes: number;
  /** Bytes written with data (the rest are holes, as a filesystem's free space). */
  dataBytes: number;
  randomBytes: number;
  compressibleBytes: number;
}

/**
 * Compressible data: bytes of 4 bits of entropy (16 letters), so zstd and lz4 shrink it to about half, and every
 * block differs (no tool gets a free ride from duplicates).
 */
function compressible(len: number): Buffer {
  const b = randomBytes(len);
  for (let i = 0; i < len; i++) b[i] = 0x61 + (b[i]! & 0x0f);
  for (let i = 63; i < len; i += 64) b[i] = 0x0a;
  return b;
}

/**
 * Writes a sparse raw image of `sizeBytes`: regions of 1-32 MiB, each written (with probability `fill`) or left a
 * hole; written regions are 64 KiB blocks, 45 % random and 55 % compressible. Then converts it to qcow2 (holes stay
 * unallocated) and returns what it holds.
 */
export function makeImage(raw: string, qcow2: string, sizeBytes: number, fill = 0.6): ImageFacts {
  const r = rng(0x5eed ^ (sizeBytes / MiB));
  const fd = openSync(raw, 'w', 0o600);
  const facts: ImageFacts = { sizeBytes, dataBytes: 0, randomBytes: 0, compressibleBytes: 0 };
  try {
    ftruncateSync(fd, sizeBytes);
    let off = 0;
    while (off < sizeBytes) {
      const len = Math.min((1 + Math.floor(r() * 32)) * MiB, sizeBytes - off);
      if (r() < fill) {
        for (let o = off; o < off + len; o += BLOCK) {
          const n = Math.min(BLOCK, off + len - o);
          const rand = r() < 0.45;
          writeSync(fd, rand ? randomBytes(n) : compressible(n), 0, n, o);
          facts.dataBytes += n;
          if (rand) facts.randomBytes += n;
          else facts.compressibleBytes += n;
        }
      }
      off += len;
    }
  } finally {
    closeSync(fd);
  }
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  syncFiles(raw, qcow2);
  return facts;
}

/**
 * Writes the files' dirty pages out (untimed): a disk image is not a gigabyte of unwritten page cache, and the first
 * tool to open one for writing (qemu-img adding a bitmap flushes at close) would otherwise pay for the others.
 */
export function syncFiles(...paths: string[]): void {
  for (const p of paths) {
    const fd = openSync(p, 'r+');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * Drops the files' pages from the page cache (`posix_fadvise(DONTNEED)` through `dd iflag=nocache count=0`; only
 * these files, never the machine's whole cache), so the next reader reads them from disk as a real backup would.
 * Returns the bytes still cached afterwards (`fincore`), which should be about none: the files are synced first.
 */
export function evictFiles(...paths: string[]): number {
  syncFiles(...paths);
  let cached = 0;
  for (const p of paths) {
    execFileSync('dd', [`if=${p}`, 'iflag=nocache', 'count=0', 'status=none']);
    cached += Number(
      execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', p], { encoding: 'utf8' }).trim(),
    );
  }
  return cached;
}

/** A change between two backups: `count` writes of `bytes` each at random offsets aligned to 4 KiB. */
export interface Change {
  name: string;
  count: number;
  bytes: number;
  /** Each tool's backup starts with the images' pages dropped from the page cache (read from disk). */
  cold?: boolean;
}

/** The changes of the bench for an image of `sizeBytes` (the issue's, scaled to the size). */
export function changesFor(sizeBytes: number): Change[] {
  const onePct = Math.max(1, Math.round(sizeBytes / 100 / MiB));
  return [
    { name: '1%', count: onePct, bytes: MiB },
    { name: '10%', count: Math.max(1, Math.round(sizeBytes / 10 / MiB)), bytes: MiB },
    { name: '4k-scattered', count: (onePct * MiB) / 4096, bytes: 4096 },
    { name: '1% cold', count: onePct, bytes: MiB, cold: true },
  ];
}

/**
 * Applies `change` to both images with `qemu-io` (the qcow2's enabled persistent bitmaps mark the writes): random
 * data from one pattern file per write, at offsets from a PRNG seeded with `seed`. Returns the bytes written.
 */
export function applyChange(
  dir: string,
  images: { qcow2: string; raw: string },
  change: Change,
  seed: number,
  sizeBytes: number,
): number {
  const r = rng(seed);
  const pdir = join(dir, `patterns-${seed}`);
  mkdirSync(pdir, { recursive: true });
  const lines: string[] = [];
  const slots = Math.floor((sizeBytes - change.bytes) / 4096);
  for (let i = 0; i < change.count; i++) {
    const f = join(pdir, String(i));
    writeFileSync(f, randomBytes(change.bytes));
    lines.push(`write -q -s ${f} ${Math.floor(r() * slots) * 4096} ${change.bytes}`);
  }
  const script = `${lines.join('\n')}\n`;
  for (const [fmt, img] of [
    ['qcow2', images.qcow2],
    ['raw', images.raw],
  ] as const) {
    const p = spawnSync('qemu-io', ['-f', fmt, img], {
      input: script,
      encoding: 'utf8',
      maxBuffer: 64 * MiB,
    });
    if (p.status !== 0 || /error|failed/i.test(p.stdout + p.stderr))
      throw new Error(`qemu-io on ${img} failed (${p.status}): ${(p.stderr || p.stdout).slice(0, 500)}`);
  }
  execFileSync('rm', ['-rf', pdir]);
  syncFiles(images.qcow2, images.raw);
  return change.count * change.bytes;
}
