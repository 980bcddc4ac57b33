// The NBD client against a fake server that speaks the real protocol byte for byte (nbd-fake-server.test-util.ts):
// reads, writes, zeroes, flushes, pipelining, sparse reads, meta contexts, error replies, ranges, closing, timeouts.
// The handshake's refusals: nbd-handshake.test.ts; a misbehaving server's replies: nbd-replies.test.ts.
import { describe, expect, it } from 'vitest';
import { ForbiddenError, InvalidRequestError, TimeoutError } from '../../shared/errors.js';
import { connectNbd } from './nbd-client.js';
import { DIRTY, Fake, type Request, useFakeServers } from './nbd-fake-server.test-util.js';
import { NbdCmd } from './nbd-protocol.js';

const { fake } = useFakeServers();

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
