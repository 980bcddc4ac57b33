// An NBD client over a unix socket (the protocol: github.com/NetworkBlockDevice/nbd doc/proto.md; QEMU's
// docs/interop/nbd.txt for `qemu:dirty-bitmap:NAME`): after the fixed newstyle handshake with structured replies and
// meta contexts (`base:allocation`, dirty bitmaps; nbd-handshake.ts), pipelined requests (several in flight, matched
// by cookie; their replies read by nbd-replies.ts). The server is a QEMU or qemu-nbd serving a VM's disk, so
// everything it sends is bounded before it is read: option replies, structured chunks (never beyond the request),
// extent counts, error messages. A protocol violation fails every request in flight with a `BadResponseError` naming
// the export and closes the socket; so does a request left without its reply past the timeout (`TimeoutError`): NBD
// cannot cancel one, and a late reply would be misread.
import { connect, type Socket } from 'node:net';
import {
  BadResponseError,
  InvalidRequestError,
  TimeoutError,
  UnavailableError,
  UnsupportedError,
} from '../../shared/errors.js';
import {
  NBD_BLOCK_STATUS_REQUEST_MAX_BYTES,
  NBD_PAYLOAD_MAX_BYTES,
  NBD_REQUEST_TIMEOUT_MS,
} from '../../shared/limits.js';
import type { NbdWhere } from './nbd-errors.js';
import { negotiate } from './nbd-handshake.js';
import { CMD_NAMES, NbdCmd, NbdFlag, type Pending, REQUEST_MAGIC, SocketReader } from './nbd-protocol.js';
import { readReplies } from './nbd-replies.js';
import type { NbdConnection, NbdConnectOptions, NbdExtent } from './types.js';

class Connection implements NbdConnection {
  sizeBytes = 0;
  readOnly = false;
  transmissionFlags = 0;
  /** Block size constraints from NBD_INFO_BLOCK_SIZE (1 / 32 MiB when the server sends none). */
  minBlock = 1;
  maxPayload = NBD_PAYLOAD_MAX_BYTES;
  /** Negotiated meta contexts: name -> id. */
  readonly contexts = new Map<string, number>();
  readonly reader: SocketReader;
  private readonly pending = new Map<number, Pending>();
  private nextCookie = 1;
  private failure: Error | undefined;
  private closing = false;
  private readonly closed: Promise<void>;
  private readonly what: string;

  constructor(
    readonly sock: Socket,
    reader: SocketReader,
    readonly exportName: string,
    private readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {
    this.what = `NBD export ${JSON.stringify(exportName)} on ${socketPath}`;
    this.reader = reader;
    this.closed = new Promise((resolve) => sock.once('close', () => resolve()));
    sock.on('error', (e) =>
      this.fail(new UnavailableError(`${this.what}: ${e.message}`, this.socketPath, e)),
    );
    sock.on('close', () =>
      this.fail(
        this.closing
          ? new InvalidRequestError(`${this.what} is closed`, this.socketPath)
          : new UnavailableError(`${this.what}: the server closed the connection`, this.socketPath),
      ),
    );
  }

  get where(): NbdWhere {
    return { what: this.what, exportName: this.exportName, socketPath: this.socketPath };
  }

  /** Fails the connection: every request in flight gets `e`, the socket is destroyed. */
  fail(e: Error): void {
    if (!this.failure) this.failure = e;
    this.reader.fail(this.failure);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.failure);
    }
    this.pending.clear();
    this.sock.destroy();
  }

  violation(message: string): BadResponseError {
    const e = new BadResponseError(`${this.what} broke the NBD protocol: ${message}`, this.socketPath);
    this.fail(e);
    return e;
  }

  // --- Handshake (nbd-handshake.ts) ------------------------------------------------------------------------------

  async handshake(contexts: string[]): Promise<void> {
    const n = await negotiate(this, contexts);
    this.sizeBytes = n.sizeBytes;
    this.readOnly = n.readOnly;
    this.transmissionFlags = n.transmissionFlags;
    this.minBlock = n.minBlock;
    this.maxPayload = n.maxPayload;
    for (const [name, id] of n.contexts) this.contexts.set(name, id);
    readReplies(this).catch((e: Error) => {
      if (!this.failure) this.fail(e);
    });
  }

  /** An error during the handshake that is not a protocol violation: the socket is closed all the same. */
  refuse(e: Error): Error {
    this.fail(e);
    return e;
  }

  // --- Transmission -------------------------------------------------------------------------------------------------

  /** The request in flight whose cookie is at `buf[at]` (replies name it). */
  peek(buf: Buffer, at: number): Pending {
    const high = buf.readUInt32BE(at);
    const cookie = buf.readUInt32BE(at + 4);
    const p = high === 0 ? this.pending.get(cookie) : undefined;
    if (!p)
      throw this.violation(`a reply to cookie ${buf.readBigUInt64BE(at)}, which no request in flight has`);
    return p;
  }

  /** Ends request `p` (still in `pending`, so that a violation found here fails it with the rest). */
  finish(p: Pending): void {
    if (p.cmd === NbdCmd.READ && !p.error && p.coveredBytes !== p.length)
      throw this.violation(`a read of ${p.length} bytes at ${p.offset} answered ${p.coveredBytes} bytes`);
    if (p.cmd === NbdCmd.BLOCK_STATUS && !p.error && !p.extents)
      throw this.violation('block status without the context asked for');
    this.pending.delete(p.cookie);
    clearTimeout(p.timer);
    if (p.error) p.reject(p.error);
    else if (p.cmd === NbdCmd.READ) p.resolve(p.data);
    else if (p.cmd === NbdCmd.BLOCK_STATUS) p.resolve(p.extents);
    else p.resolve(undefined);
  }

  /** Sends one request (with `payload` for writes) and resolves with its reply. */
  private request<T>(
    cmd: number,
    offset: number,
    length: number,
    payload?: Buffer,
    context?: number,
    /** READ: where the reply's bytes go (`length` bytes). */
    into?: Buffer,
  ): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing)
      return Promise.reject(new InvalidRequestError(`${this.what} is closing`, this.socketPath));
    let cookie = this.nextCookie;
    while (this.pending.has(cookie)) cookie = (cookie % 0xffffffff) + 1;
    this.nextCookie = (cookie % 0xffffffff) + 1;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          this.fail(
            new TimeoutError(
              `${this.what}: ${CMD_NAMES[cmd]} of ${length} bytes at ${offset} got no reply within ${this.timeoutMs} ms`,
              this.socketPath,
            ),
          ),
        this.timeoutMs,
      );
      const p: Pending = {
        cookie,
        cmd,
        offset,
        length,
        resolve: resolve as (v: unknown) => void,
        reject,
        timer,
        chunks: 0,
      };
      if (cmd === NbdCmd.READ) {
        p.data = into ?? Buffer.allocUnsafe(length);
        p.covered = [];
        p.coveredBytes = 0;
      }
      if (cmd === NbdCmd.BLOCK_STATUS) {
        p.context = context;
        p.contextsSeen = new Set();
      }
      this.pending.set(cookie, p);
      const head = Buffer.alloc(28);
      head.writeUInt32BE(REQUEST_MAGIC, 0);
      head.writeUInt16BE(0, 4);
      head.writeUInt16BE(cmd, 6);
      head.writeUInt32BE(0, 8);
      head.writeUInt32BE(cookie, 12);
      head.writeBigUInt64BE(BigInt(offset), 16);
      head.writeUInt32BE(length, 24);
      this.sock.write(head);
      if (payload) this.sock.write(payload);
    });
  }

  private checkRange(what: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
      throw new InvalidRequestError(
        `${this.what}: ${what} at ${offset} of ${length} bytes is not a valid range`,
      );
    if (offset + length > this.sizeBytes)
      throw new InvalidRequestError(
        `${this.what}: ${what} of ${length} bytes at ${offset} ends beyond the export's ${this.sizeBytes} bytes`,
        this.socketPath,
      );
    if (offset % this.minBlock !== 0 || (length % this.minBlock !== 0 && offset + length !== this.sizeBytes))
      throw new InvalidRequestError(
        `${this.what}: ${what} of ${length} bytes at ${offset} is not aligned to its ${this.minBlock}-byte blocks`,
        this.socketPath,
      );
  }

  private checkWritable(what: string): void {
    if (this.readOnly)
      throw new InvalidRequestError(`${this.what} is read-only: ${what} refused`, this.socketPath);
  }

  /** Pieces of [offset, offset+length) of at most `max` bytes (a multiple of the minimum block). */
  private pieces(offset: number, length: number, max: number): Array<[number, number]> {
    const step = max - (max % this.minBlock);
    const out: Array<[number, number]> = [];
    for (let at = offset; at < offset + length; at += step)
      out.push([at, Math.min(step, offset + length - at)]);
    return out;
  }

  /**
   * Reads [offset, offset+length). `into`: the buffer to read into (its first `length` bytes; the answer is a view of
   * it), so that a caller reusing buffers spares a fresh allocation (and its page faults) per read.
   */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.checkRange('read', offset, length);
    if (length > NBD_PAYLOAD_MAX_BYTES)
      throw new InvalidRequestError(
        `${this.what}: a read of ${length} bytes (at most ${NBD_PAYLOAD_MAX_BYTES})`,
      );
    if (into && into.length < length)
      throw new InvalidRequestError(
        `${this.what}: a read of ${length} bytes into a buffer of ${into.length}`,
      );
    if (length === 0) return Buffer.alloc(0);
    const dest = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    await Promise.all(
      this.pieces(offset, length, this.maxPayload).map(([o, n]) =>
        this.request<Buffer>(
          NbdCmd.READ,
          o,
          n,
          undefined,
          undefined,
          dest.subarray(o - offset, o - offset + n),
        ),
      ),
    );
    return dest;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.checkWritable('write');
    this.checkRange('write', offset, data.length);
    await Promise.all(
      this.pieces(offset, data.length, this.maxPayload).map(([o, n]) =>
        this.request<void>(NbdCmd.WRITE, o, n, data.subarray(o - offset, o - offset + n)),
      ),
    );
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkWritable('write-zeroes');
    this.checkRange('write-zeroes', offset, length);
    if (!(this.transmissionFlags & NbdFlag.SEND_WRITE_ZEROES))
      throw new UnsupportedError(`${this.what} does not take write-zeroes`, this.socketPath);
    await Promise.all(
      this.pieces(offset, length, NBD_BLOCK_STATUS_REQUEST_MAX_BYTES).map(([o, n]) =>
        this.request<void>(NbdCmd.WRITE_ZEROES, o, n),
      ),
    );
  }

  async flush(): Promise<void> {
    // A server that does not take flushes has nothing to flush (proto.md: the client must not send one).
    if (!(this.transmissionFlags & NbdFlag.SEND_FLUSH)) return;
    await this.request<void>(NbdCmd.FLUSH, 0, 0);
  }

  async blockStatus(context: string, offset: number, length: number): Promise<NbdExtent[]> {
    const id = this.contexts.get(context);
    if (id === undefined)
      throw new InvalidRequestError(
        `${this.what}: meta context ${context} was not negotiated (it has ${[...this.contexts.keys()].join(', ') || 'none'})`,
        this.socketPath,
      );
    this.checkRange('block-status', offset, length);
    const out: NbdExtent[] = [];
    const end = offset + length;
    let at = offset;
    const step = NBD_BLOCK_STATUS_REQUEST_MAX_BYTES - (NBD_BLOCK_STATUS_REQUEST_MAX_BYTES % this.minBlock);
    while (at < end) {
      const n = Math.min(step, end - at);
      const extents = await this.request<NbdExtent[]>(NbdCmd.BLOCK_STATUS, at, n, undefined, id);
      for (const e of extents) {
        const last = out[out.length - 1];
        // Neighbours with the same flags (from two requests) read as one extent.
        if (last && last.flags === e.flags && last.offset + last.length === e.offset) last.length += e.length;
        else out.push(e);
      }
      at = extents.reduce((x, e) => Math.max(x, e.offset + e.length), at);
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.failure) return;
    this.closing = true;
    // proto.md: no DISC while requests are in flight; wait for them (each has its timeout).
    await Promise.allSettled(
      [...this.pending.values()].map(
        (p) =>
          new Promise<void>((resolve) => {
            const { resolve: res, reject: rej } = p;
            p.resolve = (v) => {
              res(v);
              resolve();
            };
            p.reject = (e) => {
              rej(e);
              resolve();
            };
          }),
      ),
    );
    if (!this.failure) {
      const head = Buffer.alloc(28);
      head.writeUInt32BE(REQUEST_MAGIC, 0);
      head.writeUInt16BE(NbdCmd.DISC, 6);
      this.sock.end(head);
      const t = setTimeout(() => this.sock.destroy(), 2_000);
      await this.closed;
      clearTimeout(t);
    }
    this.fail(new InvalidRequestError(`${this.what} is closed`, this.socketPath));
  }
}

/** A connection to an NBD export, with the meta contexts it negotiated. */
export type NbdClient = NbdConnection & { readonly contexts: ReadonlyMap<string, number> };

/**
 * Connects to the NBD server on `opts.socket` and opens `opts.exportName` with `opts.contexts`. `NotFoundError` when
 * the server has no such export, `UnsupportedError` when it lacks a context ("has no dirty bitmap NAME"),
 * `UnavailableError` when nothing listens there, `TimeoutError` when the handshake stalls.
 */
export async function connectNbd(opts: NbdConnectOptions): Promise<NbdClient> {
  const timeoutMs = opts.timeoutMs ?? NBD_REQUEST_TIMEOUT_MS;
  const name = Buffer.byteLength(opts.exportName, 'utf8');
  if (name > 4096) throw new InvalidRequestError(`NBD export name of ${name} bytes (at most 4096)`);
  for (const c of opts.contexts ?? [])
    if (c.length === 0 || Buffer.byteLength(c, 'utf8') > 4096)
      throw new InvalidRequestError(`NBD meta context ${JSON.stringify(c.slice(0, 64))} is not a valid name`);
  const reader = new SocketReader();
  const sock = connect({ path: opts.socket, onread: reader.onread });
  reader.attach(sock);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      sock.destroy();
      reject(
        new TimeoutError(`no NBD server answered on ${opts.socket} within ${timeoutMs} ms`, opts.socket),
      );
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(t);
      resolve();
    });
    sock.once('error', (e) => {
      clearTimeout(t);
      reject(new UnavailableError(`no NBD server on ${opts.socket}: ${e.message}`, opts.socket, e));
    });
  });
  const conn = new Connection(sock, reader, opts.exportName, opts.socket, timeoutMs);
  const timer = setTimeout(
    () =>
      conn.fail(
        new TimeoutError(
          `NBD export ${JSON.stringify(opts.exportName)} on ${opts.socket}: no handshake within ${timeoutMs} ms`,
          opts.socket,
        ),
      ),
    timeoutMs,
  );
  try {
    await conn.handshake(opts.contexts ?? []);
  } catch (e) {
    conn.fail(e as Error);
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return conn;
}
