// The NBD protocol's constants and the byte-level pieces the client reads replies with (proto.md; QEMU's
// docs/interop/nbd.txt): magic numbers and codes, a bounded socket reader, safe quoting, range bookkeeping.
import type { Socket } from 'node:net';
import { NBD_PAYLOAD_MAX_BYTES } from '../../shared/limits.js';
import type { NbdExtent } from './types.js';

// Protocol constants (proto.md).
export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OLDSTYLE_MAGIC = 0x00420281861253n;
export const OPT_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;

export const NbdOpt = { GO: 7, STRUCTURED_REPLY: 8, SET_META_CONTEXT: 10, ABORT: 2 } as const;
export const NbdRep = { ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4 } as const;
export const REP_ERR = 0x80000000;
export const REP_ERR_NAMES: Record<number, string> = {
  1: 'unsupported',
  2: 'refused by policy',
  3: 'invalid',
  4: 'not supported on this platform',
  5: 'TLS required',
  6: 'unknown export',
  7: 'server shutting down',
  8: 'block size required',
  9: 'too big',
};
export const NbdInfo = { EXPORT: 0, BLOCK_SIZE: 3 } as const;

/** Transmission flags (NBD_FLAG_*). */
export const NbdFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_WRITE_ZEROES: 1 << 6,
} as const;

export const NbdCmd = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const CMD_NAMES: Record<number, string> = {
  0: 'read',
  1: 'write',
  2: 'disconnect',
  3: 'flush',
  6: 'write-zeroes',
  7: 'block-status',
};

export const NbdReply = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;
export const REPLY_FLAG_DONE = 1;

export const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EOVERFLOW',
  95: 'ENOTSUP',
  108: 'ESHUTDOWN',
};

/** The protocol's own magic numbers and codes, for tests that play the server. */
export const NBD_PROTOCOL = {
  NBDMAGIC,
  IHAVEOPT,
  OPT_REPLY_MAGIC,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  REP_ERR,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  REPLY_FLAG_DONE,
} as const;

/** Bytes of the buffer socket reads land in while no large read waits for them (reused: never handed out). */
const SCRATCH_BYTES = 256 * 1024;
/** A read of at least this many bytes takes them straight off the socket into its destination (no copy). */
const DIRECT_MIN_BYTES = 64 * 1024;

/** A read waiting for bytes from the socket: its destination (none: discard), where it is and how many are left. */
interface Sink {
  dest: Buffer | undefined;
  at: number;
  left: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

/**
 * Bytes read off a socket on demand, paused while too much waits unread (so a flooding server stays bounded). The
 * socket reads into buffers this reader hands it (`onread`): a large read in progress (a 4 MiB chunk) gets the
 * kernel's bytes straight into its destination; other bytes land in one reused scratch buffer and are copied out.
 * Node's default allocates a fresh 64 KiB buffer per socket read, and those were copied again into the destination:
 * on the backup path that was most of the reading thread's CPU (fresh memory is expensive to touch here).
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private queued = 0;
  private failure: Error | undefined;
  private readonly highWater = 2 * NBD_PAYLOAD_MAX_BYTES;
  private sock: Socket | undefined;
  private readonly scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
  private sink: Sink | undefined;
  /** The buffer handed to the socket for its next read is the sink's destination. */
  private direct = false;

  /** `net.connect({ ..., onread })`: the socket's reads land where this reader says. */
  readonly onread = {
    buffer: (): Uint8Array => this.nextBuffer(),
    callback: (n: number, _buf: Uint8Array): boolean => {
      this.landed(n);
      return true; // pausing is this reader's call (`highWater`), through the socket's pause()
    },
  };

  /** The socket made with `onread` (pausing it bounds what waits unread). */
  attach(sock: Socket): void {
    this.sock = sock;
  }

  fail(e: Error): void {
    this.failure ??= e;
    const s = this.sink;
    this.sink = undefined;
    s?.reject(this.failure);
  }

  private nextBuffer(): Uint8Array {
    const s = this.sink;
    if (s?.dest && s.left >= DIRECT_MIN_BYTES) {
      this.direct = true;
      return s.dest.subarray(s.at, s.at + s.left);
    }
    this.direct = false;
    return this.scratch;
  }

  /** `n` bytes arrived: in the sink's destination (direct), else in the scratch, for the sink first, then queued. */
  private landed(n: number): void {
    let from = 0;
    const s = this.sink;
    if (this.direct) {
      this.direct = false;
      if (!s) return; // cannot happen: a sink ends only by bytes landing, or by a failure that ends the socket
      from = n;
    } else if (s) {
      from = Math.min(n, s.left);
      if (s.dest) this.scratch.copy(s.dest, s.at, 0, from);
    }
    if (s) {
      s.at += from;
      s.left -= from;
      if (s.left === 0) {
        this.sink = undefined;
        s.resolve();
      }
    }
    if (from < n) {
      this.chunks.push(Buffer.from(this.scratch.subarray(from, n)));
      this.queued += n - from;
      if (this.queued > this.highWater) this.sock?.pause();
    }
  }

  private resumeIfDrained(): void {
    if (this.sock?.isPaused() && this.queued < this.highWater / 2) this.sock.resume();
  }

  /** Copies exactly `n` bytes into `dest` at `at` (or discards them when `dest` is undefined). */
  async readInto(dest: Buffer | undefined, at: number, n: number): Promise<void> {
    let left = n;
    while (left > 0 && this.queued > 0) {
      const head = this.chunks[0]!;
      const take = Math.min(left, head.length);
      if (dest) head.copy(dest, at + (n - left), 0, take);
      if (take === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(take);
      this.queued -= take;
      left -= take;
    }
    this.resumeIfDrained();
    if (left === 0) return;
    if (this.failure) throw this.failure;
    // Nothing queued: the rest comes off the socket into `dest` (one reader at a time: the protocol is sequential).
    await new Promise<void>((resolve, reject) => {
      this.sink = { dest, at: at + (n - left), left, resolve, reject };
    });
  }

  async read(n: number): Promise<Buffer> {
    // Fast path: the bytes are in the first buffer already.
    const head = this.chunks[0];
    if (head && head.length >= n) {
      const out = head.subarray(0, n);
      if (head.length === n) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
      this.queued -= n;
      this.resumeIfDrained();
      return out;
    }
    const buf = Buffer.allocUnsafe(n);
    await this.readInto(buf, 0, n);
    return buf;
  }
}

/** A request in flight. */
export interface Pending {
  cookie: number;
  cmd: number;
  offset: number;
  length: number;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  /** READ: the reply's bytes, and the ranges the chunks so far covered (sorted, merged), and their count. */
  data?: Buffer;
  covered?: Array<[number, number]>;
  coveredBytes?: number;
  chunks: number;
  /** BLOCK_STATUS: the context wanted, and the contexts answered so far. */
  context?: number;
  contextsSeen?: Set<number>;
  extents?: NbdExtent[];
  /** The first error chunk (or simple error reply) of this request. */
  error?: Error;
}

/** Text a server sent, made safe to quote in an error message (printable, bounded). */
export function quoted(buf: Buffer): string {
  const text = buf.subarray(0, 256).toString('utf8');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: that is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

export function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return Number.NaN;
  return Number(v);
}

/** Inserts [a, b) into sorted, merged `ranges`; false when it overlaps one of them. */
export function insertRange(ranges: Array<[number, number]>, a: number, b: number): boolean {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid]![0] < a) lo = mid + 1;
    else hi = mid;
  }
  const prev = ranges[lo - 1];
  const next = ranges[lo];
  if ((prev && prev[1] > a) || (next && next[0] < b)) return false;
  if (prev && prev[1] === a && next && next[0] === b) {
    prev[1] = next[1];
    ranges.splice(lo, 1);
  } else if (prev && prev[1] === a) prev[1] = b;
  else if (next && next[0] === b) next[0] = a;
  else ranges.splice(lo, 0, [a, b]);
  return true;
}
