// The NBD client's reply reader (nbd-replies.ts) against a fake server that misbehaves after the handshake: every
// reply that breaks the protocol is refused with a BadResponseError naming the export, before its payload is read,
// and the connection is closed.
import { describe, expect, it } from 'vitest';
import { BadResponseError } from '../../shared/errors.js';
import { connectNbd } from './nbd-client.js';
import { Fake, type FakeOptions, type Request, useFakeServers } from './nbd-fake-server.test-util.js';
import { NbdReply } from './nbd-protocol.js';

const { fake } = useFakeServers();

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
});
