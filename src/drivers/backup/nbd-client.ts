// An NBD client over a unix socket (the protocol: github.com/NetworkBlockDevice/nbd doc/proto.md; QEMU's
// docs/interop/nbd.txt for `qemu:dirty-bitmap:NAME`): fixed newstyle handshake, structured replies, meta contexts
// (`base:allocation`, dirty bitmaps), then pipelined requests (several in flight, matched by cookie). The server is a
// QEMU or qemu-nbd serving a VM's disk, so everything it sends is bounded before it is read: option replies,
// structured chunks (never beyond the request), extent counts, error messages. A protocol violation fails every
// request in flight with a `BadResponseError` naming the export and closes the socket; so does a request left
// without its reply past the timeout (`TimeoutError`): NBD cannot cancel one, and a late reply would be misread.
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
  NBD_ERROR_MESSAGE_MAX_BYTES,
  NBD_EXTENTS_MAX,
  NBD_OPTION_REPLIES_MAX,
  NBD_OPTION_REPLY_MAX_BYTES,
  NBD_PAYLOAD_MAX_BYTES,
  NBD_REQUEST_TIMEOUT_MS,
} from '../../shared/limits.js';
import { type NbdWhere, optionError, requestError } from './nbd-errors.js';
import {
  CMD_NAMES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  insertRange,
  NBDMAGIC,
  NbdCmd,
  NbdFlag,
  NbdInfo,
  NbdOpt,
  NbdRep,
  NbdReply,
  OLDSTYLE_MAGIC,
  OPT_REPLY_MAGIC,
  type Pending,
  quoted,
  REP_ERR,
  REPLY_FLAG_DONE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  SocketReader,
  STRUCTURED_REPLY_MAGIC,
  u64,
} from './nbd-protocol.js';
import type { NbdConnection, NbdConnectOptions, NbdExtent } from './types.js';

export {
  insertRange,
  NBD_PROTOCOL,
  NbdCmd,
  NbdFlag,
  NbdInfo,
  NbdOpt,
  NbdRep,
  NbdReply,
} from './nbd-protocol.js';

class Connection implements NbdConnection {
  sizeBytes = 0;
  readOnly = false;
  transmissionFlags = 0;
  /** Block size constraints from NBD_INFO_BLOCK_SIZE (1 / 32 MiB when the server sends none). */
  minBlock = 1;
  maxPayload = NBD_PAYLOAD_MAX_BYTES;
  /** Negotiated meta contexts: name -> id. */
  readonly contexts = new Map<string, number>();
  private readonly reader: SocketReader;
  private readonly pending = new Map<number, Pending>();
  private nextCookie = 1;
  private failure: Error | undefined;
  private closing = false;
  private readonly closed: Promise<void>;
  private readonly what: string;

  constructor(
    private readonly sock: Socket,
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

  private get where(): NbdWhere {
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

  // --- Handshake ---------------------------------------------------------------------------------------------------

  async handshake(contexts: string[]): Promise<void> {
    const hello = await this.reader.read(18);
    if (hello.readBigUInt64BE(0) !== NBDMAGIC) throw this.violation('no NBDMAGIC greeting');
    const second = hello.readBigUInt64BE(8);
    if (second === OLDSTYLE_MAGIC)
      throw this.refuse(
        new UnsupportedError(`${this.what} speaks the oldstyle protocol only`, this.socketPath),
      );
    if (second !== IHAVEOPT) throw this.violation('unknown handshake magic');
    const flags = hello.readUInt16BE(16);
    if (!(flags & FLAG_FIXED_NEWSTYLE))
      throw this.refuse(
        new UnsupportedError(`${this.what} does not offer the fixed newstyle handshake`, this.socketPath),
      );
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES));
    this.sock.write(clientFlags);

    // Structured replies: needed for sparse reads and block status.
    await this.option(NbdOpt.STRUCTURED_REPLY, Buffer.alloc(0), (type) => {
      if (type !== NbdRep.ACK) throw this.violation(`reply ${type} to STRUCTURED_REPLY`);
      return true;
    });

    if (contexts.length > 0) await this.setMetaContexts(contexts);

    // GO, asking for block sizes (so we promise to honour them).
    const name = Buffer.from(this.exportName, 'utf8');
    const go = Buffer.alloc(4 + name.length + 2 + 2);
    go.writeUInt32BE(name.length, 0);
    name.copy(go, 4);
    go.writeUInt16BE(1, 4 + name.length);
    go.writeUInt16BE(NbdInfo.BLOCK_SIZE, 6 + name.length);
    let gotExport = false;
    await this.option(NbdOpt.GO, go, (type, data) => {
      if (type === NbdRep.ACK) {
        if (!gotExport) throw this.violation('GO acknowledged without NBD_INFO_EXPORT');
        return true;
      }
      if (type !== NbdRep.INFO) throw this.violation(`reply ${type} to GO`);
      if (data.length < 2) throw this.violation('NBD_REP_INFO shorter than its type');
      const info = data.readUInt16BE(0);
      if (info === NbdInfo.EXPORT) {
        if (data.length !== 12) throw this.violation(`NBD_INFO_EXPORT of ${data.length} bytes`);
        const size = u64(data, 2);
        if (!Number.isSafeInteger(size)) throw this.violation('export size beyond 2^53');
        this.sizeBytes = size;
        this.transmissionFlags = data.readUInt16BE(10);
        this.readOnly = (this.transmissionFlags & NbdFlag.READ_ONLY) !== 0;
        gotExport = true;
      } else if (info === NbdInfo.BLOCK_SIZE) {
        if (data.length !== 14) throw this.violation(`NBD_INFO_BLOCK_SIZE of ${data.length} bytes`);
        const min = data.readUInt32BE(2);
        const preferred = data.readUInt32BE(6);
        const max = data.readUInt32BE(10);
        const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
        if (!pow2(min) || min > 65_536 || !pow2(preferred) || preferred < min || max < min || max < preferred)
          throw this.violation(`block sizes min ${min}, preferred ${preferred}, max ${max} are not valid`);
        this.minBlock = min;
        this.maxPayload = Math.min(NBD_PAYLOAD_MAX_BYTES, max - (max % min));
      }
      // Other infos (name, description) are not needed.
      return false;
    });
    this.readLoop().catch((e: Error) => {
      if (!this.failure) this.fail(e);
    });
  }

  /** An error during the handshake that is not a protocol violation: the socket is closed all the same. */
  private refuse(e: Error): Error {
    this.fail(e);
    return e;
  }

  private async setMetaContexts(contexts: string[]): Promise<void> {
    const name = Buffer.from(this.exportName, 'utf8');
    const queries = contexts.map((c) => Buffer.from(c, 'utf8'));
    const data = Buffer.alloc(4 + name.length + 4 + queries.reduce((n, q) => n + 4 + q.length, 0));
    let at = data.writeUInt32BE(name.length, 0);
    at += name.copy(data, at);
    at = data.writeUInt32BE(queries.length, at);
    for (const q of queries) {
      at = data.writeUInt32BE(q.length, at);
      at += q.copy(data, at);
    }
    await this.option(NbdOpt.SET_META_CONTEXT, data, (type, reply) => {
      if (type === NbdRep.ACK) return true;
      if (type !== NbdRep.META_CONTEXT) throw this.violation(`reply ${type} to SET_META_CONTEXT`);
      if (reply.length < 5) throw this.violation('NBD_REP_META_CONTEXT without a name');
      const id = reply.readUInt32BE(0);
      const ctx = reply.subarray(4).toString('utf8');
      if (!contexts.includes(ctx))
        throw this.violation(`meta context ${JSON.stringify(quoted(reply.subarray(4)))} was not asked for`);
      if (this.contexts.has(ctx) || [...this.contexts.values()].includes(id))
        throw this.violation(`meta context ${ctx} (id ${id}) answered twice`);
      this.contexts.set(ctx, id);
      return false;
    });
    const lacking = contexts.filter((c) => !this.contexts.has(c));
    if (lacking.length > 0) {
      const what = lacking.map((c) =>
        c.startsWith('qemu:dirty-bitmap:')
          ? `dirty bitmap ${c.slice('qemu:dirty-bitmap:'.length)}`
          : `meta context ${c}`,
      );
      throw this.refuse(
        new UnsupportedError(
          `${this.what} has no ${what.join(', no ')} (the server does not export ${lacking.length === 1 ? 'it' : 'them'})`,
          this.socketPath,
        ),
      );
    }
  }

  /**
   * Sends option `opt` and reads its replies, each handed to `onReply` until it returns true (the last one). Error
   * replies become typed errors; every reply is bounded in size and count.
   */
  private async option(
    opt: number,
    data: Buffer,
    onReply: (type: number, data: Buffer) => boolean,
  ): Promise<void> {
    const head = Buffer.alloc(16);
    head.writeBigUInt64BE(IHAVEOPT, 0);
    head.writeUInt32BE(opt, 8);
    head.writeUInt32BE(data.length, 12);
    this.sock.write(data.length > 0 ? Buffer.concat([head, data]) : head);
    for (let n = 0; ; n++) {
      if (n >= NBD_OPTION_REPLIES_MAX)
        throw this.violation(`more than ${NBD_OPTION_REPLIES_MAX} replies to option ${opt}`);
      const rh = await this.reader.read(20);
      if (rh.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw this.violation('option reply without its magic');
      if (rh.readUInt32BE(8) !== opt)
        throw this.violation(`reply to option ${rh.readUInt32BE(8)}, not ${opt}`);
      const type = rh.readUInt32BE(12);
      const length = rh.readUInt32BE(16);
      if (length > NBD_OPTION_REPLY_MAX_BYTES)
        throw this.violation(`option reply of ${length} bytes (at most ${NBD_OPTION_REPLY_MAX_BYTES})`);
      const payload = length > 0 ? Buffer.from(await this.reader.read(length)) : Buffer.alloc(0);
      if (type & REP_ERR) throw this.refuse(optionError(this.where, opt, type, payload));
      if (onReply(type, payload)) return;
    }
  }

  // --- Transmission -------------------------------------------------------------------------------------------------

  private async readLoop(): Promise<void> {
    for (;;) {
      const magicBuf = await this.reader.read(4);
      const magic = magicBuf.readUInt32BE(0);
      if (magic === SIMPLE_REPLY_MAGIC) {
        const rest = await this.reader.read(12);
        const error = rest.readUInt32BE(0);
        const p = this.peek(rest, 4);
        if (error === 0 && (p.cmd === NbdCmd.READ || p.cmd === NbdCmd.BLOCK_STATUS))
          throw this.violation(
            `a simple reply with data to a ${CMD_NAMES[p.cmd]} (structured replies were agreed)`,
          );
        if (error !== 0) p.error = requestError(this.where, p, error);
        this.finish(p);
      } else if (magic === STRUCTURED_REPLY_MAGIC) {
        const rest = await this.reader.read(16);
        const flags = rest.readUInt16BE(0);
        const type = rest.readUInt16BE(2);
        const length = rest.readUInt32BE(12);
        const p = this.peek(rest, 4);
        await this.chunk(p, type, length);
        if (flags & REPLY_FLAG_DONE) this.finish(p);
        else if (type === NbdReply.NONE) throw this.violation('a NONE chunk without the DONE flag');
      } else throw this.violation(`reply magic 0x${magic.toString(16)}`);
    }
  }

  private peek(buf: Buffer, at: number): Pending {
    const high = buf.readUInt32BE(at);
    const cookie = buf.readUInt32BE(at + 4);
    const p = high === 0 ? this.pending.get(cookie) : undefined;
    if (!p)
      throw this.violation(`a reply to cookie ${buf.readBigUInt64BE(at)}, which no request in flight has`);
    return p;
  }

  /** Reads one structured chunk's payload for `p`, checking it against the request before reading it. */
  private async chunk(p: Pending, type: number, length: number): Promise<void> {
    p.chunks++;
    const cmd = CMD_NAMES[p.cmd];
    // Every chunk is at least one byte of reply: a request draws at most one chunk per 512 bytes asked, plus a few.
    if (p.chunks > 64 + Math.ceil(p.length / 512)) throw this.violation(`too many reply chunks to a ${cmd}`);
    switch (type) {
      case NbdReply.NONE:
        if (length !== 0) throw this.violation(`a NONE chunk of ${length} bytes`);
        return;
      case NbdReply.OFFSET_DATA: {
        if (p.cmd !== NbdCmd.READ) throw this.violation(`data in a reply to a ${cmd}`);
        if (length < 9 || length - 8 > p.length)
          throw this.violation(`a data chunk of ${length} bytes to a read of ${p.length}`);
        const off = u64(await this.reader.read(8), 0);
        const n = length - 8;
        this.cover(p, off, n);
        await this.reader.readInto(p.data!, off - p.offset, n);
        return;
      }
      case NbdReply.OFFSET_HOLE: {
        if (p.cmd !== NbdCmd.READ) throw this.violation(`a hole in a reply to a ${cmd}`);
        if (length !== 12) throw this.violation(`a hole chunk of ${length} bytes`);
        const b = await this.reader.read(12);
        const off = u64(b, 0);
        const n = b.readUInt32BE(8);
        this.cover(p, off, n);
        p.data!.fill(0, off - p.offset, off - p.offset + n);
        return;
      }
      case NbdReply.BLOCK_STATUS: {
        if (p.cmd !== NbdCmd.BLOCK_STATUS) throw this.violation(`block status in a reply to a ${cmd}`);
        if (length < 12 || (length - 4) % 8 !== 0 || (length - 4) / 8 > NBD_EXTENTS_MAX)
          throw this.violation(
            `a block status chunk of ${length} bytes (at most ${NBD_EXTENTS_MAX} extents)`,
          );
        const b = await this.reader.read(length);
        const id = b.readUInt32BE(0);
        if (![...this.contexts.values()].includes(id))
          throw this.violation(`block status of unknown context id ${id}`);
        if (p.contextsSeen!.has(id))
          throw this.violation(`block status of context id ${id} twice in one reply`);
        p.contextsSeen!.add(id);
        if (id !== p.context) return;
        const end = p.offset + p.length;
        const extents: NbdExtent[] = [];
        let at = p.offset;
        for (let i = 4; i < length; i += 8) {
          if (at >= end) throw this.violation('block status extents beyond the range asked');
          const len = b.readUInt32BE(i);
          if (len === 0) throw this.violation('a block status extent of length 0');
          extents.push({ offset: at, length: Math.min(len, end - at), flags: b.readUInt32BE(i + 4) });
          at += len;
        }
        p.extents = extents;
        return;
      }
      default: {
        // NBD_REPLY_TYPE_ERROR, ERROR_OFFSET, and error types this client does not know (bit 15 set).
        if (!(type & 0x8000)) throw this.violation(`unknown reply chunk type ${type}`);
        const tail = type === NbdReply.ERROR_OFFSET ? 8 : 0;
        if (length < 6 + tail || length > 6 + NBD_ERROR_MESSAGE_MAX_BYTES + tail)
          throw this.violation(`an error chunk of ${length} bytes`);
        const b = Buffer.from(await this.reader.read(length));
        const errno = b.readUInt32BE(0);
        const msgLen = b.readUInt16BE(4);
        if (errno === 0) throw this.violation('an error chunk with error 0');
        if ((type === NbdReply.ERROR || type === NbdReply.ERROR_OFFSET) && 6 + msgLen + tail !== length)
          throw this.violation('an error chunk whose message length does not add up');
        if (type === NbdReply.ERROR_OFFSET) {
          const off = u64(b, 6 + msgLen);
          if (!(off >= p.offset && off < p.offset + p.length))
            throw this.violation(`an error at offset ${off}, outside the request`);
        }
        p.error ??= requestError(this.where, p, errno, b.subarray(6, 6 + Math.min(msgLen, length - 6)));
        return;
      }
    }
  }

  /** Records that a read's chunk covers [off, off+n): inside the request, overlapping no earlier chunk. */
  private cover(p: Pending, off: number, n: number): void {
    if (!Number.isSafeInteger(off) || n < 1 || off < p.offset || off + n > p.offset + p.length)
      throw this.violation(`a chunk at ${off} (+${n}) outside the read of ${p.length} bytes at ${p.offset}`);
    if (!insertRange(p.covered!, off, off + n)) throw this.violation(`reply chunks overlap at ${off}`);
    p.coveredBytes! += n;
  }

  /** Ends request `p` (still in `pending`, so that a violation found here fails it with the rest). */
  private finish(p: Pending): void {
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
