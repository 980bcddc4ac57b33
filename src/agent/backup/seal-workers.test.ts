import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { BackupKeySet, newBackupKey } from '../../shared/backup-crypto.js';
import { CorruptDataError, VmlinkError } from '../../shared/errors.js';
import { inlineCodec } from './pipeline.js';
import { SealThreads } from './seal-workers.js';

const keys = BackupKeySet.fromKey(newBackupKey(), 'test key');
const MiB = 1024 * 1024;

describe('sealing threads', () => {
  const threads = new SealThreads({ count: 2 });
  afterAll(() => threads.close());

  it('name, seal and open chunks as the key set does on the calling thread, moving the buffers', async () => {
    const codec = await threads.codecFor(keys);
    const inline = inlineCodec(keys);
    const chunks = [randomBytes(4 * MiB), Buffer.alloc(4 * MiB, 7), randomBytes(100)];
    const results = await Promise.all(
      chunks.map(async (c) => {
        const copy = Buffer.from(c);
        const { id, plain } = await codec.identify(copy);
        expect(copy.length === 0 || c.length < 4096).toBe(true); // a whole buffer moved; a pooled one was copied
        return { c, id, blob: await codec.seal(id, plain) };
      }),
    );
    for (const { c, id, blob } of results) {
      expect(id).toBe(keys.chunkId(c));
      // Sealing is randomised (IV): the threads' blob opens on this thread, and this thread's there.
      expect(keys.openChunk(id, blob).equals(c)).toBe(true);
      expect((await codec.open(id, await inline.seal(id, Buffer.from(c)))).equals(c)).toBe(true);
    }
    await codec.close();
    await expect(codec.identify(randomBytes(10))).rejects.toThrow(/closed/);
  }, 60_000);

  it("keep two jobs' keys apart, give a damaged chunk's typed error back, and keep working", async () => {
    const otherKeys = BackupKeySet.fromKey(newBackupKey(), 'other key');
    const [a, b] = await Promise.all([threads.codecFor(keys), threads.codecFor(otherKeys)]);
    const plain = randomBytes(MiB);
    const [ida, idb] = await Promise.all([a.identify(Buffer.from(plain)), b.identify(Buffer.from(plain))]);
    expect(ida.id).toBe(keys.chunkId(plain));
    expect(idb.id).toBe(otherKeys.chunkId(plain));
    const blob = keys.sealChunk(ida.id, plain);
    await expect(b.open(ida.id, Buffer.from(blob))).rejects.toThrow(); // not its key
    blob.writeUInt8(blob.readUInt8(blob.length - 1) ^ 1, blob.length - 1);
    const err = await a.open(ida.id, blob).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmlinkError);
    expect((err as VmlinkError).kind).toBe(new CorruptDataError('x').kind);
    expect((await a.identify(Buffer.from(plain))).id).toBe(ida.id);
    await Promise.all([a.close(), b.close()]);
  }, 60_000);

  it('seal into a spare buffer and give the plain buffer back (reuse), on threads as inline', async () => {
    const inline = { ...inlineCodec(keys), close: async () => {} };
    for (const codec of [await threads.codecFor(keys), inline]) {
      const c = Buffer.concat([randomBytes(MiB), Buffer.alloc(3 * MiB, 0x61)]);
      const { id, plain } = await codec.identify(Buffer.from(c));
      const spare = Buffer.from(new ArrayBuffer(4 * MiB + 4096));
      const spareAb = spare.buffer;
      const r = await codec.sealInto(id, plain, spare);
      expect(r.blob.buffer.byteLength).toBe(4 * MiB + 4096); // built in the spare's memory, not a fresh buffer
      expect(r.blob.byteOffset).toBe(0);
      expect(r.plain?.equals(c)).toBe(true); // the plain buffer back, its bytes unchanged
      expect(keys.openChunk(id, r.blob).equals(c)).toBe(true);
      if (codec !== inline) expect(spareAb.byteLength).toBe(0); // moved to the thread and back
      // A spare too small to hold the blob: a blob of its own, just as good.
      const { plain: p2 } = await codec.identify(Buffer.from(c));
      const small = await codec.sealInto(id, p2, Buffer.from(new ArrayBuffer(1024)));
      expect(small.blob.buffer.byteLength).not.toBe(1024);
      expect(keys.openChunk(id, small.blob).equals(c)).toBe(true);
      await codec.close();
    }
  }, 60_000);

  it('identify and seal in place in a buffer of the caller (compressible and not), on threads as inline', async () => {
    const inline = { ...inlineCodec(keys), close: async () => {} };
    for (const codec of [await threads.codecFor(keys), inline]) {
      const chunks = [Buffer.alloc(4 * MiB, 0x62), randomBytes(4 * MiB), randomBytes(5000)];
      for (const c of chunks) {
        const home = Buffer.from(new ArrayBuffer(4 * MiB + 64 * 1024));
        home.fill(0xee); // bytes past the chunk must never reach its blob
        c.copy(home);
        const read = home.subarray(0, c.length);
        const { id, plain } = await codec.identify(read, home);
        expect(id).toBe(keys.chunkId(c));
        expect(plain.length).toBe(c.length);
        expect(plain.buffer.byteLength).toBe(4 * MiB + 64 * 1024); // the whole buffer came back, not a copy
        if (codec !== inline) expect(home.buffer.byteLength).toBe(0); // moved, not copied
        const whole = Buffer.from(plain.buffer);
        const r = await codec.sealInto(id, plain, whole);
        expect(r.blob.buffer.byteLength).toBe(4 * MiB + 64 * 1024); // built over the plaintext
        expect(r.blob.byteOffset).toBe(0);
        expect(r.plain).toBeUndefined(); // nothing else to give back
        expect(keys.openChunk(id, Buffer.from(r.blob)).equals(c)).toBe(true);
      }
      await codec.close();
    }
  }, 60_000);

  it('start again after being stopped', async () => {
    await threads.close();
    const codec = await threads.codecFor(keys);
    const plain = randomBytes(1000);
    expect((await codec.identify(Buffer.from(plain))).id).toBe(keys.chunkId(plain));
    await codec.close();
  }, 60_000);
});
