// The NBD client against a fake server in this file that speaks the real protocol (proto.md) byte for byte, and can
// be told to misbehave: oversized, overlapping, out-of-range and unsolicited replies must close the connection with a
// BadResponseError naming the export, never be read into memory or handed to the caller.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  BadResponseError,
  ForbiddenError,
  InvalidRequestError,
  NotFoundError,
  TimeoutError,
  UnavailableError,
  UnsupportedError,
} from '../../shared/errors.js';
import {
  connectNbd,
  insertRange,
  NbdCmd,
  NbdFlag,
  NbdOpt,
  NbdRep,
  NbdReply,
  NBD_PROTOCOL as P,
} from './nbd-client.js';

const dir = mkdtempSync(join(tmpdir(), 'nbd-client-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Request {
  cmd: number;
  flags: number;
  cookie: Buffer;
  offset: number;
  length: number;
  data?: Buffer;
}

/** What a test may change of the fake server's behaviour. */
interface FakeOptions {
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

class Fake {
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

const fakes: Fake[] = [];
async function fake(opts: FakeOptions = {}): Promise<Fake> {
  const f = new Fake(opts);
  await f.listen();
  fakes.push(f);
  return f;
}
afterEach(async () => {
  await Promise.all(fakes.splice(0).map((f) => f.close()));
});

const DIRTY = 'qemu:dirty-bitmap:vmlink-nightly-20261201T120000Z';

describe('connectNbd against a fake server', () => {
  it('negotiates, reads, writes, zeroes, flushes and closes with DISC', async () => {
    const f = await fake();
    const c = await connectNbd({ socket: f.socket, exportName: 'disk' });
    expect(c.sizeBytes).toBe(1 << 20);
    expect(c.readOnly).toBe(false);
    expect(await c.read(4096, 8192)).toEqual(f.data.subarray(4096, 4096 + 8192));
    const payload = Buffer.alloc(5000, 0xab);
    await c.write(100, payload);
    expect(f.data.subarray(100, 5100)).toEqual(payload);
    await c.writeZeroes(200, 100);
    expect(f.data.subarray(200, 300)).toEqual(Buffer.alloc(100));
    await c.flush();
    expect(await c.read(0, 400)).toEqual(f.data.subarray(0, 400));
    await c.close();
    expect(f.discs).toBe(1);
    expect(f.requests.map((r) => r.cmd)).toEqual([
      NbdCmd.READ,
      NbdCmd.WRITE,
      NbdCmd.WRITE_ZEROES,
      NbdCmd.FLUSH,
      NbdCmd.READ,
    ]);
    await expect(c.read(0, 1)).rejects.toThrow(/is closed/);
  });

  it('pipelines requests and matches replies that come back in another order by cookie', async () => {
    const held: Request[] = [];
    const f = await fake({
      onRequest: (req, sock, me) => {
        held.push(req);
        if (held.length < 4) return true;
        // Answer all four, last first.
        for (const r of held.reverse()) me.answer(r, sock);
        return true;
      },
    });
    const c = await connectNbd({ socket: f.socket, exportName: 'disk' });
    const reads = [0, 1, 2, 3].map((i) => c.read(i * 65536, 65536));
    const got = await Promise.all(reads);
    got.forEach((b, i) => {
      expect(b).toEqual(f.data.subarray(i * 65536, (i + 1) * 65536));
    });
    // All four were sent before any answer came back.
    expect(f.requests.length).toBe(4);
    expect(new Set(f.requests.map((r) => r.cookie.toString('hex'))).size).toBe(4);
    await c.close();
  });

  it('reassembles a sparse read from data and hole chunks in any order', async () => {
    const f = await fake({
      onRequest: (req, sock, me) => {
        if (req.cmd !== NbdCmd.READ) return false;
        const o = req.offset;
        sock.write(Fake.dataChunk(req.cookie, o + 8192, me.data.subarray(o + 8192, o + 12288), false));
        sock.write(Fake.holeChunk(req.cookie, o, 8192, false));
        sock.write(Fake.dataChunk(req.cookie, o + 12288, me.data.subarray(o + 12288, o + 16384), true));
        return true;
      },
    });
    const c = await connectNbd({ socket: f.socket, exportName: 'disk' });
    const b = await c.read(65536, 16384);
    expect(b.subarray(0, 8192)).toEqual(Buffer.alloc(8192));
    expect(b.subarray(8192)).toEqual(f.data.subarray(65536 + 8192, 65536 + 16384));
    await c.close();
  });

  it('negotiates meta contexts and returns extents of the one asked, covering the range in order', async () => {
    const f = await fake({
      size: 4 << 20,
      contexts: {
        'base:allocation': (_o, l) => [[l, 0]],
        // Answers at most two extents of 64 KiB per request: the client must ask again for the rest.
        [DIRTY]: (o, l): Array<[number, number]> =>
          l <= 65536
            ? [[65536, o % (128 * 1024) === 0 ? 1 : 0]] // the last one may run past the range's end
            : [
                [65536, o % (128 * 1024) === 0 ? 1 : 0],
                [65536, o % (128 * 1024) === 0 ? 0 : 1],
              ],
      },
    });
    const c = await connectNbd({
      socket: f.socket,
      exportName: 'disk',
      contexts: ['base:allocation', DIRTY],
    });
    expect([...c.contexts.keys()].sort()).toEqual(['base:allocation', DIRTY].sort());
    const ext = await c.blockStatus(DIRTY, 0, 300 * 1024);
    // 0-64K dirty, 64-128K clean, 128-192K dirty, ... ; the last extent clipped to the range's end.
    expect(ext[0]).toEqual({ offset: 0, length: 65536, flags: 1 });
    expect(ext[1]).toEqual({ offset: 65536, length: 65536, flags: 0 });
    const last = ext[ext.length - 1]!;
    expect(last.offset + last.length).toBe(300 * 1024);
    let at = 0;
    for (const e of ext) {
      expect(e.offset).toBe(at);
      at += e.length;
    }
    expect(await c.blockStatus('base:allocation', 0, 4 << 20)).toEqual([
      { offset: 0, length: 4 << 20, flags: 0 },
    ]);
    await expect(c.blockStatus('qemu:dirty-bitmap:other', 0, 4096)).rejects.toThrow(InvalidRequestError);
    await c.close();
  });

  it('refuses clearly when the server lacks a dirty bitmap or the export', async () => {
    const f = await fake({ contexts: { 'base:allocation': (_o, l) => [[l, 0]] } });
    await expect(
      connectNbd({ socket: f.socket, exportName: 'disk', contexts: ['base:allocation', DIRTY] }),
    ).rejects.toThrow(
      `NBD export "disk" on ${f.socket} has no dirty bitmap vmlink-nightly-20261201T120000Z (the server does not export it)`,
    );
    await expect(connectNbd({ socket: f.socket, exportName: 'disk', contexts: [DIRTY] })).rejects.toThrow(
      UnsupportedError,
    );
    const err = await connectNbd({ socket: f.socket, exportName: 'vdb' }).catch((e) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.message).toMatch(/NBD export "vdb" on .* not found \(unknown export: no such export\)/);
  });

  it('refuses a server without the fixed newstyle handshake, and a socket nobody serves', async () => {
    const f = await fake({ noFixed: true });
    await expect(connectNbd({ socket: f.socket, exportName: 'disk' })).rejects.toThrow(UnsupportedError);
    await expect(connectNbd({ socket: join(dir, 'nobody.sock'), exportName: 'disk' })).rejects.toThrow(
      UnavailableError,
    );
  });

  it('refuses writes to a read-only export without sending them', async () => {
    const f = await fake({ readOnly: true });
    const c = await connectNbd({ socket: f.socket, exportName: 'disk' });
    expect(c.readOnly).toBe(true);
    await expect(c.write(0, Buffer.alloc(512))).rejects.toThrow(/is read-only: write refused/);
    await expect(c.writeZeroes(0, 512)).rejects.toThrow(/is read-only/);
    expect(f.requests).toEqual([]);
    expect((await c.read(0, 16)).length).toBe(16);
    await c.close();
  });

  it('turns error replies into typed errors and keeps the connection usable', async () => {
    const f = await fake({
      onRequest: (req, sock) => {
        if (req.cmd === NbdCmd.READ && req.offset === 0) {
          sock.write(Fake.errorChunk(req.cookie, 5, 'Input/output error\nspoof', true));
          return true;
        }
        if (req.cmd === NbdCmd.WRITE) {
          sock.write(Fake.simple(req.cookie, 1));
          return true;
        }
        return false;
      },
    });
    const c = await connectNbd({ socket: f.socket, exportName: 'disk' });
    const e = await c.read(0, 4096).catch((x) => x);
    expect(e.kind).toBe('unavailable');
    expect(e.message).toContain('read of 4096 bytes at 0 failed: EIO (Input/output error?spoof)');
    await expect(c.write(0, Buffer.alloc(16))).rejects.toThrow(ForbiddenError);
    expect(await c.read(4096, 16)).toEqual(f.data.subarray(4096, 4112));
    await c.close();
  });

  it('checks ranges and alignment against the export and its block sizes before sending', async () => {
    const f = await fake({ blockSize: [512, 4096, 65536] });
    const c = await connectNbd({ socket: f.socket, exportName: 'disk' });
    await expect(c.read(100, 512)).rejects.toThrow(/not aligned to its 512-byte blocks/);
    await expect(c.read((1 << 20) - 512, 1024)).rejects.toThrow(/ends beyond the export's 1048576 bytes/);
    await expect(c.read(-512, 512)).rejects.toThrow(InvalidRequestError);
    // Larger than the server's maximum payload: split into 64 KiB requests.
    expect(await c.read(0, 256 * 1024)).toEqual(f.data.subarray(0, 256 * 1024));
    expect(f.requests.map((r) => r.length)).toEqual([65536, 65536, 65536, 65536]);
    await c.close();
  });

  it('close waits for the requests in flight before it sends DISC, and refuses new ones', async () => {
    const f = await fake({
      onRequest: (req, sock, me) => {
        setTimeout(() => me.answer(req, sock), 200);
        return true;
      },
    });
    const c = await connectNbd({ socket: f.socket, exportName: 'disk' });
    const reading = c.read(0, 4096);
    const closing = c.close();
    await expect(c.read(0, 512)).rejects.toThrow(/is closing/);
    expect(await reading).toEqual(f.data.subarray(0, 4096));
    await closing;
    expect(f.discs).toBe(1);
    expect(f.requests.length).toBe(1);
  });

  it('fails every request in flight with a TimeoutError when one gets no reply, and closes', async () => {
    const f = await fake({ onRequest: (req) => req.cmd === NbdCmd.READ && req.offset === 0 });
    const c = await connectNbd({ socket: f.socket, exportName: 'disk', timeoutMs: 300 });
    const stuck = c.read(0, 512).catch((e) => e);
    const other = c.read(1 << 19, 512 * 1024).catch((e) => e); // answered at once, before the timeout
    const e = await stuck;
    expect(e).toBeInstanceOf(TimeoutError);
    expect(e.message).toMatch(/read of 512 bytes at 0 got no reply within 300 ms/);
    expect(await other).toBeInstanceOf(Buffer);
    await expect(c.read(0, 512)).rejects.toThrow(TimeoutError);
  });
});

/** A server whose answer to the first read (or block status) is `bad`; the client must refuse it and close. */
async function violation(
  bad: (req: Request, me: Fake) => Buffer,
  opts: { contexts?: FakeOptions['contexts']; cmd?: 'read' | 'status' } = {},
): Promise<Error> {
  const f = await fake({
    size: 4 << 20,
    contexts: opts.contexts,
    onRequest: (req, sock, me) => {
      sock.write(bad(req, me));
      return true;
    },
  });
  const names = Object.keys(opts.contexts ?? {});
  const c = await connectNbd({ socket: f.socket, exportName: 'disk', contexts: names });
  const e = (await (opts.cmd === 'status' ? c.blockStatus(names[0]!, 0, 1 << 20) : c.read(0, 65536)).catch(
    (x) => x,
  )) as Error;
  // Closed: the next request fails with the same error, and nothing more is sent.
  await expect(c.read(0, 512)).rejects.toBe(e);
  expect(f.requests.length).toBe(1);
  return e;
}

describe('a misbehaving server is refused with a BadResponseError naming the export, and the socket closed', () => {
  const ctx = { 'base:allocation': (_o: number, l: number): Array<[number, number]> => [[l, 0]] };

  it('a data chunk longer than the read', async () => {
    const e = await violation((r, me) => Fake.dataChunk(r.cookie, 0, me.data.subarray(0, 65537), true));
    expect(e).toBeInstanceOf(BadResponseError);
    expect(e.message).toMatch(/NBD export "disk" on .* broke the NBD protocol: a data chunk of 65545 bytes/);
  });

  it('an oversized chunk is refused from its header, before its payload arrives', async () => {
    const e = await violation((r) => {
      const h = Fake.chunk(r.cookie, NbdReply.OFFSET_DATA, Buffer.alloc(0), true);
      h.writeUInt32BE(0xfffffff0, 16); // claims 4 GiB; nothing follows
      return h;
    });
    expect(e.message).toMatch(/a data chunk of 4294967280 bytes/);
  });

  it('a data chunk outside the range asked', async () => {
    const e = await violation((r, me) => Fake.dataChunk(r.cookie, 1 << 20, me.data.subarray(0, 4096), true));
    expect(e.message).toMatch(/outside the read of 65536 bytes at 0/);
  });

  it('overlapping chunks', async () => {
    const e = await violation((r, me) =>
      Buffer.concat([
        Fake.dataChunk(r.cookie, 0, me.data.subarray(0, 40000), false),
        Fake.holeChunk(r.cookie, 32768, 32768, true),
      ]),
    );
    expect(e.message).toMatch(/reply chunks overlap at 32768/);
  });

  it('a read answered short', async () => {
    const e = await violation((r, me) => Fake.dataChunk(r.cookie, 0, me.data.subarray(0, 4096), true));
    expect(e.message).toMatch(/a read of 65536 bytes at 0 answered 4096 bytes/);
  });

  it('a flood of tiny chunks', async () => {
    const e = await violation((r) =>
      Buffer.concat(Array.from({ length: 300 }, (_, i) => Fake.holeChunk(r.cookie, i, 1, false))),
    );
    expect(e.message).toMatch(/too many reply chunks to a read/);
  });

  it('a reply to a cookie no request has', async () => {
    const e = await violation(() => Fake.simple(Buffer.from('0000000000000063', 'hex'), 0));
    expect(e.message).toMatch(/a reply to cookie 99, which no request in flight has/);
  });

  it('a simple reply carrying a read (structured replies were agreed)', async () => {
    const e = await violation((r) => Fake.simple(r.cookie, 0));
    expect(e.message).toMatch(/a simple reply with data to a read/);
  });

  it('a reply with an unknown magic', async () => {
    const e = await violation(() => Buffer.from('deadbeef00000000000000000000000000000000', 'hex'));
    expect(e.message).toMatch(/reply magic 0xdeadbeef/);
  });

  it('an error chunk whose message overruns it, and one with a huge message', async () => {
    const e = await violation((r) => {
      const c = Fake.errorChunk(r.cookie, 5, 'abc', true);
      c.writeUInt16BE(200, 24); // message length beyond the chunk
      return c;
    });
    expect(e.message).toMatch(/message length does not add up/);
    const e2 = await violation((r) => Fake.errorChunk(r.cookie, 5, 'x'.repeat(5000), true));
    expect(e2.message).toMatch(/an error chunk of 5006 bytes/);
  });

  it('an unknown non-error chunk type', async () => {
    const e = await violation((r) => Fake.chunk(r.cookie, 77, Buffer.alloc(4), true));
    expect(e.message).toMatch(/unknown reply chunk type 77/);
  });

  it('block status: extents beyond the range, zero-length extents, unknown or repeated contexts, too many', async () => {
    const cases: Array<[(r: Request) => Buffer, RegExp]> = [
      [
        (r) =>
          Fake.statusChunk(
            r.cookie,
            10,
            [
              [1 << 20, 0],
              [4096, 1],
            ],
            true,
          ),
        /extents beyond the range asked/,
      ],
      [(r) => Fake.statusChunk(r.cookie, 10, [[0, 0]], true), /a block status extent of length 0/],
      [(r) => Fake.statusChunk(r.cookie, 99, [[4096, 0]], true), /unknown context id 99/],
      [
        (r) =>
          Buffer.concat([
            Fake.statusChunk(r.cookie, 10, [[4096, 0]], false),
            Fake.statusChunk(r.cookie, 10, [[4096, 0]], true),
          ]),
        /context id 10 twice/,
      ],
      [
        (r) => {
          const h = Fake.chunk(r.cookie, NbdReply.BLOCK_STATUS, Buffer.alloc(0), true);
          h.writeUInt32BE(4 + 8 * 300_000, 16);
          return h;
        },
        /at most 262144 extents/,
      ],
      [(r) => Fake.chunk(r.cookie, NbdReply.NONE, Buffer.alloc(0), true), /without the context asked for/],
      [(r) => Fake.dataChunk(r.cookie, 0, Buffer.alloc(10), true), /data in a reply to a block-status/],
    ];
    for (const [bad, re] of cases) {
      const e = await violation(bad, { contexts: ctx, cmd: 'status' });
      expect(e).toBeInstanceOf(BadResponseError);
      expect(e.message).toMatch(re);
    }
  });

  it('handshake: an oversized option reply, a context not asked for, GO without the export info', async () => {
    const big = await fake({
      onOption: (opt, _d) => (opt === NbdOpt.STRUCTURED_REPLY ? bigReply(opt) : undefined),
    });
    function bigReply(opt: number): Buffer {
      const h = big.optReply(opt, NbdRep.ACK);
      h.writeUInt32BE(1 << 30, 16);
      return h;
    }
    await expect(connectNbd({ socket: big.socket, exportName: 'disk' })).rejects.toThrow(
      /option reply of 1073741824 bytes/,
    );
    const sneaky = await fake({
      onOption: (opt) => {
        if (opt !== NbdOpt.SET_META_CONTEXT) return undefined;
        const r = Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from('qemu:allocation-depth')]);
        return Buffer.concat([
          sneaky.optReply(opt, NbdRep.META_CONTEXT, r),
          sneaky.optReply(opt, NbdRep.ACK),
        ]);
      },
    });
    await expect(
      connectNbd({ socket: sneaky.socket, exportName: 'disk', contexts: ['base:allocation'] }),
    ).rejects.toThrow(/meta context "qemu:allocation-depth" was not asked for/);
    const noInfo = await fake({
      onOption: (opt) => (opt === NbdOpt.GO ? noInfo.optReply(opt, NbdRep.ACK) : undefined),
    });
    await expect(connectNbd({ socket: noInfo.socket, exportName: 'disk' })).rejects.toThrow(
      /GO acknowledged without NBD_INFO_EXPORT/,
    );
    const silent = await fake({ onOption: () => Buffer.alloc(0) });
    await expect(connectNbd({ socket: silent.socket, exportName: 'disk', timeoutMs: 300 })).rejects.toThrow(
      /no handshake within 300 ms/,
    );
  });
});

describe('insertRange', () => {
  it('keeps ranges sorted and merged, and refuses overlaps', () => {
    const r: Array<[number, number]> = [];
    expect(insertRange(r, 10, 20)).toBe(true);
    expect(insertRange(r, 30, 40)).toBe(true);
    expect(insertRange(r, 0, 5)).toBe(true);
    expect(r).toEqual([
      [0, 5],
      [10, 20],
      [30, 40],
    ]);
    expect(insertRange(r, 20, 30)).toBe(true);
    expect(r).toEqual([
      [0, 5],
      [10, 40],
    ]);
    expect(insertRange(r, 4, 6)).toBe(false);
    expect(insertRange(r, 39, 41)).toBe(false);
    expect(insertRange(r, 0, 100)).toBe(false);
    expect(insertRange(r, 5, 10)).toBe(true);
    expect(r).toEqual([[0, 40]]);
  });
});
