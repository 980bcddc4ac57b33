import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupKeySet, newBackupKey } from '../../shared/backup-crypto.js';
import { CorruptDataError, VmlinkError } from '../../shared/errors.js';
import { inlineCodec } from './pipeline.js';
import { jobCodec, SealWorkers } from './seal-workers.js';

const keys = BackupKeySet.fromKey(newBackupKey(), 'test key');
const MiB = 1024 * 1024;

describe('sealing threads', () => {
  let workers: SealWorkers;
  beforeAll(async () => {
    workers = await SealWorkers.start(keys, 2);
  }, 60_000);
  afterAll(() => workers.close());

  it('name, seal and open chunks as the key set does on the calling thread, moving the buffers', async () => {
    const inline = inlineCodec(keys);
    const chunks = [randomBytes(4 * MiB), Buffer.alloc(4 * MiB, 7), randomBytes(100)];
    const results = await Promise.all(
      chunks.map(async (c) => {
        const copy = Buffer.from(c);
        const { id, plain } = await workers.identify(copy);
        expect(copy.length === 0 || c.length < 4096).toBe(true); // a whole buffer moved; a pooled one was copied
        const blob = await workers.seal(id, plain);
        return { c, id, blob };
      }),
    );
    for (const { c, id, blob } of results) {
      expect(id).toBe(keys.chunkId(c));
      // Sealing is randomised (IV): the threads' blob opens on this thread, and this thread's there.
      expect(keys.openChunk(id, blob).equals(c)).toBe(true);
      expect((await workers.open(id, await inline.seal(id, Buffer.from(c)))).equals(c)).toBe(true);
    }
  });

  it("give a damaged chunk's typed error back, and keep working", async () => {
    const plain = randomBytes(MiB);
    const id = keys.chunkId(plain);
    const blob = keys.sealChunk(id, plain);
    blob.writeUInt8(blob.readUInt8(blob.length - 1) ^ 1, blob.length - 1);
    const err = await workers.open(id, blob).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmlinkError);
    expect((err as VmlinkError).kind).toBe(new CorruptDataError('x').kind);
    expect((await workers.identify(Buffer.from(plain))).id).toBe(id);
  });

  it('refuse work once closed', async () => {
    const other = await jobCodec(keys);
    await other.close();
    await expect(other.identify(randomBytes(10))).rejects.toThrow(/closed/);
  });
});
