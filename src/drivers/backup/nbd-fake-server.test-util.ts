// Test harness of the NBD client's unit tests: a fake server on a unix socket that speaks the real protocol (proto.md)
// byte for byte (handshake, options, structured replies, meta contexts) and can be told to misbehave, per option and
// per request.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { NbdCmd, NbdFlag, NbdOpt, NbdRep, NbdReply, NBD_PROTOCOL as P } from './nbd-protocol.js';

/** A dirty bitmap's meta context, as capture names them. */
export const DIRTY = 'qemu:dirty-bitmap:vmlink-nightly-20261201T120000Z';

let dir = '';

export interface Request {
  cmd: number;
  flags: number;
  cookie: Buffer;
  offset: number;
  length: number;
  data?: Buffer;
}

/** What a test may change of the fake server's behaviour. */
export interface FakeOptions {
  exportName?: string;
  size?: number;
  readOnly?: boolean;
  /** Meta contexts it serves, each a function of the range asked returning [length, flags] extents. */
  contexts?: Record<string, (offset: number, length: number) => Array<[number, number]>>;
  blockSize?: [number, number, number];
  noFixed?: boolean;
  /** Replaces the answer to one option: return the bytes to send (or undefined for the normal answer). */
  onOption?: (opt: number, data: Buffer) => Buffer | undefined;
  /** Replaces the answer to one request: return true when it answered (or chose not to) itself. */
  onRequest?: (req: Request, sock: Socket, fake: Fake) => boolean;
}

export class Fake {
  readonly data: Buffer;
  readonly socket: string;
  readonly requests: Request[] = [];
  readonly server: Server;
  discs = 0;
  readonly ctxIds = new Map<number, string>();
  constructor(readonly opts: FakeOptions) {
    this.data = Buffer.alloc(opts.size ?? 1 << 20);
    for (let i = 0; i < this.data.length; i += 4) this.data.writeUInt32BE((i * 2654435761) >>> 0, i);
    this.socket = join(dir, `s${Math.random().toString(36).slice(2)}.sock`);
    this.server = createServer((sock) => this.serve(sock));
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.socket, r));
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }

  optReply(opt: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(P.OPT_REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data.length, 16);
    return Buffer.concat([h, data]);
  }

  static chunk(cookie: Buffer, type: number, payload: Buffer, done: boolean): Buffer {
    const h = Buffer.alloc(20);
    h.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(done ? P.REPLY_FLAG_DONE : 0, 4);
    h.writeUInt16BE(type, 6);
    cookie.copy(h, 8);
    h.writeUInt32BE(payload.length, 16);
    return Buffer.concat([h, payload]);
  }

  static simple(cookie: Buffer, error: number): Buffer {
    const h = Buffer.alloc(16);
    h.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(error, 4);
    cookie.copy(h, 8);
    return h;
  }

  static dataChunk(cookie: Buffer, offset: number, data: Buffer, done: boolean): Buffer {
    const off = Buffer.alloc(8);
    off.writeBigUInt64BE(BigInt(offset));
    return Fake.chunk(cookie, NbdReply.OFFSET_DATA, Buffer.concat([off, data]), done);
  }

  static holeChunk(cookie: Buffer, offset: number, length: number, done: boolean): Buffer {
    const b = Buffer.alloc(12);
    b.writeBigUInt64BE(BigInt(offset));
    b.writeUInt32BE(length, 8);
    return Fake.chunk(cookie, NbdReply.OFFSET_HOLE, b, done);
  }

  static errorChunk(cookie: Buffer, errno: number, message: string, done: boolean): Buffer {
    const m = Buffer.from(message);
    const b = Buffer.alloc(6 + m.length);
    b.writeUInt32BE(errno, 0);
    b.writeUInt16BE(m.length, 4);
    m.copy(b, 6);
    return Fake.chunk(cookie, NbdReply.ERROR, b, done);
  }

  static statusChunk(cookie: Buffer, id: number, extents: Array<[number, number]>, done: boolean): Buffer {
    const b = Buffer.alloc(4 + 8 * extents.length);
    b.writeUInt32BE(id, 0);
    extents.forEach(([l, f], i) => {
      b.writeUInt32BE(l, 4 + 8 * i);
      b.writeUInt32BE(f, 8 + 8 * i);
    });
    return Fake.chunk(cookie, NbdReply.BLOCK_STATUS, b, done);
  }

  /** The normal answer to a request. */
  answer(req: Request, sock: Socket): void {
    const { cookie, offset, length } = req;
    switch (req.cmd) {
      case NbdCmd.READ:
        sock.write(Fake.dataChunk(cookie, offset, this.data.subarray(offset, offset + length), true));
        return;
      case NbdCmd.WRITE:
        if (this.opts.readOnly) sock.write(Fake.simple(cookie, 1));
        else {
          req.data!.copy(this.data, offset);
          sock.write(Fake.simple(cookie, 0));
        }
        return;
      case NbdCmd.WRITE_ZEROES:
        this.data.fill(0, offset, offset + length);
        sock.write(Fake.simple(cookie, 0));
        return;
      case NbdCmd.FLUSH:
        sock.write(Fake.simple(cookie, 0));
        return;
      case NbdCmd.BLOCK_STATUS: {
        const ids = [...this.ctxIds.entries()];
        ids.forEach(([id, name], i) => {
          sock.write(
            Fake.statusChunk(cookie, id, this.opts.contexts![name]!(offset, length), i === ids.length - 1),
          );
        });
        return;
      }
    }
  }

  private serve(sock: Socket): void {
    let buf = Buffer.alloc(0);
    let state: 'flags' | 'options' | 'transmission' = 'flags';
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(P.NBDMAGIC, 0);
    hello.writeBigUInt64BE(P.IHAVEOPT, 8);
    hello.writeUInt16BE(this.opts.noFixed ? 0 : P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
    sock.write(hello);
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (state === 'flags') {
          if (buf.length < 4) return;
          buf = buf.subarray(4);
          state = 'options';
        } else if (state === 'options') {
          if (buf.length < 16) return;
          const opt = buf.readUInt32BE(8);
          const len = buf.readUInt32BE(12);
          if (buf.length < 16 + len) return;
          const data = buf.subarray(16, 16 + len);
          buf = buf.subarray(16 + len);
          const custom = this.opts.onOption?.(opt, data);
          if (custom) {
            sock.write(custom);
            continue;
          }
          if (this.option(opt, data, sock)) state = 'transmission';
        } else {
          if (buf.length < 28) return;
          const cmd = buf.readUInt16BE(6);
          const req: Request = {
            cmd,
            flags: buf.readUInt16BE(4),
            cookie: Buffer.from(buf.subarray(8, 16)),
            offset: Number(buf.readBigUInt64BE(16)),
            length: buf.readUInt32BE(24),
          };
          const total = 28 + (cmd === NbdCmd.WRITE ? req.length : 0);
          if (buf.length < total) return;
          if (cmd === NbdCmd.WRITE) req.data = Buffer.from(buf.subarray(28, total));
          buf = buf.subarray(total);
          if (cmd === NbdCmd.DISC) {
            this.discs++;
            sock.end();
            return;
          }
          this.requests.push(req);
          if (!this.opts.onRequest?.(req, sock, this)) this.answer(req, sock);
        }
      }
    });
  }

  /** Answers one option the normal way; true once GO succeeded. */
  private option(opt: number, data: Buffer, sock: Socket): boolean {
    const name = this.opts.exportName ?? 'disk';
    if (opt === NbdOpt.STRUCTURED_REPLY) sock.write(this.optReply(opt, NbdRep.ACK));
    else if (opt === NbdOpt.SET_META_CONTEXT) {
      const nlen = data.readUInt32BE(0);
      const n = data.readUInt32BE(4 + nlen);
      let at = 8 + nlen;
      for (let i = 0; i < n; i++) {
        const l = data.readUInt32BE(at);
        const q = data.subarray(at + 4, at + 4 + l).toString();
        at += 4 + l;
        if (this.opts.contexts?.[q]) {
          const id = 10 + this.ctxIds.size;
          this.ctxIds.set(id, q);
          const r = Buffer.alloc(4);
          r.writeUInt32BE(id);
          sock.write(this.optReply(opt, NbdRep.META_CONTEXT, Buffer.concat([r, Buffer.from(q)])));
        }
      }
      sock.write(this.optReply(opt, NbdRep.ACK));
    } else if (opt === NbdOpt.GO) {
      const nlen = data.readUInt32BE(0);
      if (data.subarray(4, 4 + nlen).toString() !== name) {
        sock.write(this.optReply(opt, P.REP_ERR + 6, Buffer.from('no such export')));
        return false;
      }
      const info = Buffer.alloc(12);
      info.writeUInt16BE(0, 0);
      info.writeBigUInt64BE(BigInt(this.data.length), 2);
      info.writeUInt16BE(
        NbdFlag.HAS_FLAGS |
          NbdFlag.SEND_FLUSH |
          NbdFlag.SEND_WRITE_ZEROES |
          (this.opts.readOnly ? NbdFlag.READ_ONLY : 0),
        10,
      );
      sock.write(this.optReply(opt, NbdRep.INFO, info));
      if (this.opts.blockSize) {
        const bs = Buffer.alloc(14);
        bs.writeUInt16BE(3, 0);
        this.opts.blockSize.forEach((v, i) => {
          bs.writeUInt32BE(v, 2 + 4 * i);
        });
        sock.write(this.optReply(opt, NbdRep.INFO, bs));
      }
      sock.write(this.optReply(opt, NbdRep.ACK));
      return true;
    } else sock.write(this.optReply(opt, P.REP_ERR + 1));
    return false;
  }
}

/** Registers the fake servers' directory and their closing after each test (call at a test file's top level or in a
 * `describe`); returns what starts one, and a socket path in that directory nobody serves. */
export function useFakeServers(): { fake: (opts?: FakeOptions) => Promise<Fake>; unserved: () => string } {
  const fakes: Fake[] = [];
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nbd-client-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  afterEach(async () => {
    await Promise.all(fakes.splice(0).map((f) => f.close()));
  });
  return {
    fake: async (opts = {}) => {
      const f = new Fake(opts);
      await f.listen();
      fakes.push(f);
      return f;
    },
    unserved: () => join(dir, 'nobody.sock'),
  };
}
