// The NBD client's socket reader: bytes a large read waits for land straight in its destination, other bytes in a
// reused scratch buffer and are copied out; either way every byte arrives once, in order, whatever sizes the
// server's writes have. A failure rejects a read that waits.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { insertRange, SocketReader } from './nbd-protocol.js';

let dir: string | undefined;
let server: Server | undefined;
let client: Socket | undefined;

afterEach(async () => {
  client?.destroy();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = server = client = undefined;
});

/** A unix socket server that writes `data` in pieces of the given sizes (cycled), then waits. */
async function serve(
  data: Buffer,
  sizes: number[],
): Promise<{ reader: SocketReader; peer: Promise<Socket> }> {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-nbd-reader-'));
  const path = join(dir, 's');
  let gotPeer: (s: Socket) => void = () => {};
  const peer = new Promise<Socket>((resolve) => {
    gotPeer = resolve;
  });
  server = createServer((s) => {
    gotPeer(s);
    let at = 0;
    let k = 0;
    const next = () => {
      if (at >= data.length) return;
      const n = sizes[k++ % sizes.length]!;
      s.write(data.subarray(at, at + n), () => setImmediate(next));
      at += n;
    };
    next();
  });
  await new Promise<void>((resolve) => server!.listen(path, resolve));
  const reader = new SocketReader();
  client = connect({ path, onread: reader.onread });
  reader.attach(client);
  return { reader, peer };
}

describe('SocketReader', () => {
  it('delivers every byte once and in order across small reads, large direct reads and discards', async () => {
    const MiB = 1024 * 1024;
    const data = randomBytes(3 * MiB + 100);
    // Odd write sizes: headers and payloads straddle socket reads.
    const { reader } = await serve(data, [7, 300_001, 64 * 1024 + 3, 1, 1_000_000]);
    const head = await reader.read(20);
    const big = Buffer.alloc(2 * MiB);
    await reader.readInto(big, 0, 2 * MiB); // large: lands in place
    await reader.readInto(undefined, 0, 500_000); // discarded
    const small = Buffer.alloc(1000);
    await reader.readInto(small, 0, 1000);
    const rest = await reader.read(data.length - 20 - 2 * MiB - 500_000 - 1000);
    expect(head.equals(data.subarray(0, 20))).toBe(true);
    expect(big.equals(data.subarray(20, 20 + 2 * MiB))).toBe(true);
    const after = 20 + 2 * MiB + 500_000;
    expect(small.equals(data.subarray(after, after + 1000))).toBe(true);
    expect(rest.equals(data.subarray(after + 1000))).toBe(true);
  });

  it('writes a large read into its own range of the destination only', async () => {
    const data = randomBytes(256 * 1024);
    const { reader } = await serve(data, [4096, 100_000]);
    const dest = Buffer.alloc(data.length + 200, 0xee);
    await reader.readInto(dest, 100, data.length);
    expect(dest.subarray(100, 100 + data.length).equals(data)).toBe(true);
    expect(dest.subarray(0, 100).every((b) => b === 0xee)).toBe(true);
    expect(dest.subarray(100 + data.length).every((b) => b === 0xee)).toBe(true);
  });

  it('rejects a read that waits when the reader fails, and every read after', async () => {
    const { reader } = await serve(randomBytes(10), [10]);
    await reader.read(10);
    const waiting = reader.readInto(Buffer.alloc(1 << 20), 0, 1 << 20);
    reader.fail(new Error('gone'));
    await expect(waiting).rejects.toThrow('gone');
    await expect(reader.read(1)).rejects.toThrow('gone');
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
