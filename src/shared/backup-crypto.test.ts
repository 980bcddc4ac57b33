// Backup crypto: the derivation and blob format checked against an independent implementation of docs/backup.md's
// text (node:crypto by hand), every way a blob can be damaged or forged, zip bombs, manifests and configs under
// the wrong key or altered, and recovery keys with typos.
import { createCipheriv, createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { compress } from 'zstd-napi';
import { BACKUP_BLOB_MAX_BYTES, BACKUP_CHUNK_BYTES, type Manifest } from './backup.js';
import {
  BackupKeySet,
  BLOB_OVERHEAD,
  blobChecksumOk,
  blobProblem,
  canonicalJson,
  newBackupKey,
  parseRecoveryKey,
  recoveryKeyText,
  ZERO_CHUNK,
} from './backup-crypto.js';
import { CorruptDataError, InvalidRequestError, KeyMismatchError } from './errors.js';

const RAW = Buffer.alloc(32, 1);
const derive = (raw: Buffer, info: string, n = 32) =>
  Buffer.from(hkdfSync('sha256', raw, 'vmlink-backup-v1', info, n));

/** A blob built by hand from docs/backup.md, with any codec byte and body (the test's own sealing). */
function forge(raw: Buffer, id: string, codec: number, body: Buffer): Buffer {
  const header = Buffer.from([0x56, 0x4c, 0x43, 0x4b, 1, codec, 0, 0]); // "VLCK"
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', derive(raw, 'enc'), iv);
  c.setAAD(Buffer.concat([header, Buffer.from(id, 'hex')]));
  const ct = Buffer.concat([c.update(body), c.final()]);
  const tag = c.getAuthTag();
  const sum = createHash('sha256').update(header).update(iv).update(tag).update(ct).digest();
  return Buffer.concat([header, sum, iv, tag, ct]);
}

/** Recomputes a blob's checksum after a change, as a forger without the key can. */
function reseal(blob: Buffer): Buffer {
  const b = Buffer.from(blob);
  createHash('sha256').update(b.subarray(0, 8)).update(b.subarray(40)).digest().copy(b, 8);
  return b;
}

function corrupt(fn: () => unknown): CorruptDataError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CorruptDataError);
    return e as CorruptDataError;
  }
  throw new Error('expected CorruptDataError');
}

describe('BackupKeySet', () => {
  const keys = BackupKeySet.fromKey(RAW, 'backup-key');

  it('takes exactly 32 bytes, raw or base64', () => {
    for (const n of [0, 16, 31, 33, 64]) {
      expect(() => BackupKeySet.fromKey(Buffer.alloc(n), 'k')).toThrow(InvalidRequestError);
      expect(() => BackupKeySet.fromKey(Buffer.alloc(n), 'k')).toThrow(/k: a backup key is 32 bytes, got/);
    }
    expect(BackupKeySet.fromBase64(RAW.toString('base64')).fingerprint).toBe(keys.fingerprint);
    expect(BackupKeySet.fromBase64(` ${RAW.toString('base64')}\n`).fingerprint).toBe(keys.fingerprint);
    for (const bad of [
      '',
      'not base64',
      Buffer.alloc(31).toString('base64'),
      Buffer.alloc(33).toString('base64'),
    ]) {
      expect(() => BackupKeySet.fromBase64(bad)).toThrow(InvalidRequestError);
    }
  });

  it('derives the fingerprint and chunk ids as the docs say (HKDF-SHA256, salt vmlink-backup-v1), stable', () => {
    expect(keys.fingerprint).toBe(derive(RAW, 'fingerprint', 16).toString('hex'));
    expect(keys.fingerprint).toMatch(/^[0-9a-f]{32}$/);
    // A golden value: the derivation must never change, or every store's binding and every chunk id would.
    expect(keys.fingerprint).toBe('1a223d2666edd396f5915c4b376af1f5');
    const p = Buffer.from('hello');
    expect(keys.chunkId(p)).toBe('ba9c745e28247dd31f4456df347e4230e4ca6952dae31d9315cf2b43f44434dd');
    expect(keys.chunkId(p)).toBe(createHmac('sha256', derive(RAW, 'id')).update(p).digest('hex'));
    expect(BackupKeySet.fromKey(newBackupKey()).chunkId(p)).not.toBe(keys.chunkId(p));
    expect(BackupKeySet.fromKey(newBackupKey()).fingerprint).not.toBe(keys.fingerprint);
    expect(JSON.stringify(keys)).not.toContain(RAW.toString('hex'));
  });

  it('seals compressible data with zstd and incompressible data raw, in the documented layout', () => {
    const text = Buffer.from(
      'all work and no play makes jack a dull boy\n'.repeat(100_000).slice(0, BACKUP_CHUNK_BYTES),
    );
    const rnd = randomBytes(BACKUP_CHUNK_BYTES);
    for (const [plain, codec] of [
      [text, 1],
      [rnd, 0],
      [Buffer.concat([rnd.subarray(0, BACKUP_CHUNK_BYTES / 2), Buffer.alloc(BACKUP_CHUNK_BYTES / 2)]), 1], // probe sees the zeros
      [Buffer.alloc(0), 0],
      [Buffer.from('x'), 0],
    ] as const) {
      const id = keys.chunkId(plain);
      const blob = keys.sealChunk(id, plain);
      expect(blob.subarray(0, 4).toString('latin1')).toBe('VLCK');
      expect([blob[4], blob[5], blob[6], blob[7]]).toEqual([1, codec, 0, 0]);
      const sum = createHash('sha256').update(blob.subarray(0, 8)).update(blob.subarray(40)).digest();
      expect(blob.subarray(8, 40).equals(sum)).toBe(true);
      expect(blobChecksumOk(blob)).toBe(true);
      if (codec === 0) expect(blob.length).toBe(BLOB_OVERHEAD + plain.length);
      else expect(blob.length).toBeLessThan(plain.length * 0.6);
      expect(blob.length).toBeLessThanOrEqual(BACKUP_BLOB_MAX_BYTES);
      expect(keys.openChunk(id, blob).equals(plain)).toBe(true);
      // The test's own sealing from the docs opens too: the format is what the docs say.
      expect(
        keys.openChunk(id, forge(RAW, id, codec, codec === 1 ? compress(plain) : plain)).equals(plain),
      ).toBe(true);
    }
    const id = keys.chunkId(text);
    expect(keys.sealChunk(id, text).subarray(40, 52).equals(keys.sealChunk(id, text).subarray(40, 52))).toBe(
      false,
    );
  });

  it('seals into a given buffer when it is large enough (a view of it), else into one of its own', () => {
    const k = BackupKeySet.fromKey(RAW);
    const text = Buffer.alloc(BACKUP_CHUNK_BYTES, 'backup text ');
    const noise = randomBytes(BACKUP_CHUNK_BYTES);
    const out = Buffer.alloc(BACKUP_BLOB_MAX_BYTES, 0xee);
    for (const plain of [text, noise, text]) {
      const id = k.chunkId(plain);
      const blob = k.sealChunk(id, plain, out);
      expect(blob.buffer).toBe(out.buffer);
      expect(blob.byteOffset).toBe(out.byteOffset);
      expect(blobChecksumOk(blob)).toBe(true);
      expect(k.openChunk(id, blob).equals(plain)).toBe(true);
    }
    const small = Buffer.alloc(1024);
    const blob = k.sealChunk(k.chunkId(noise), noise, small);
    expect(blob.buffer).not.toBe(small.buffer);
    expect(k.openChunk(k.chunkId(noise), blob).equals(noise)).toBe(true);
  });

  it('refuses to seal more than a chunk, or under an id that is not one', () => {
    const big = Buffer.alloc(BACKUP_CHUNK_BYTES + 1);
    expect(() => keys.sealChunk(keys.chunkId(big), big)).toThrow(InvalidRequestError);
    expect(() => keys.sealChunk('../x', Buffer.from('a'))).toThrow(InvalidRequestError);
    expect(() => keys.openChunk('ABC', Buffer.alloc(100))).toThrow(InvalidRequestError);
  });

  it('finds every flipped byte of a blob, naming the chunk', () => {
    const plain = Buffer.from('a small chunk of a disk');
    const id = keys.chunkId(plain);
    const blob = keys.sealChunk(id, plain);
    for (let i = 0; i < blob.length; i++) {
      const b = Buffer.from(blob);
      b[i]! ^= 0x01;
      expect(blobChecksumOk(b), `byte ${i}`).toBe(false);
      const e = corrupt(() => keys.openChunk(id, b));
      expect(e.message).toContain(`chunk ${id}`);
      expect(e.subject).toBe(`chunk/${id}`);
    }
    expect(BLOB_OVERHEAD).toBe(68); // 8 header, 32 SHA-256, 12 IV, 16 tag
    expect(blobProblem(blob.subarray(0, 67))).toMatch(/blob of 67 bytes is shorter than its 68-byte header/);
    expect(blobChecksumOk(blob.subarray(0, blob.length - 1))).toBe(false);
  });

  it('refuses a blob re-checksummed after a change (codec, ciphertext), under another id, or another key', () => {
    const plain = Buffer.from('z'.repeat(10_000));
    const id = keys.chunkId(plain);
    const blob = keys.sealChunk(id, plain);
    expect(blob[5]).toBe(1);
    const codecFlipped = Buffer.from(blob);
    codecFlipped[5] = 0;
    expect(corrupt(() => keys.openChunk(id, reseal(codecFlipped))).message).toMatch(/fails authentication/);
    const ctFlipped = Buffer.from(blob);
    ctFlipped[blob.length - 1]! ^= 0x80;
    expect(corrupt(() => keys.openChunk(id, reseal(ctFlipped))).message).toMatch(/fails authentication/);
    const otherId = keys.chunkId(Buffer.from('other'));
    expect(corrupt(() => keys.openChunk(otherId, blob)).message).toMatch(/fails authentication/);
    const other = BackupKeySet.fromKey(newBackupKey(), 'other');
    const e = corrupt(() => other.openChunk(id, blob));
    expect(e.message).toContain(`fails authentication with key ${other.fingerprint}`);
  });

  it('refuses a blob whose content is not its id (sealed under the key, but of other data)', () => {
    const id = keys.chunkId(Buffer.from('what the manifest says'));
    const blob = forge(RAW, id, 0, Buffer.from('something else'));
    expect(corrupt(() => keys.openChunk(id, blob)).message).toMatch(/content does not match its id/);
  });

  it('refuses a zip bomb: a frame declaring, or expanding to, more than a chunk', () => {
    const id = keys.chunkId(Buffer.from('bomb'));
    const huge = Buffer.alloc(64 * 1024 * 1024);
    const declared = forge(RAW, id, 1, compress(huge));
    expect(declared.length).toBeLessThan(10_000);
    expect(corrupt(() => keys.openChunk(id, declared)).message).toMatch(
      /does not decompress within 4194304 bytes/,
    );
    const undeclared = forge(RAW, id, 1, compress(huge, { contentSizeFlag: false }));
    expect(corrupt(() => keys.openChunk(id, undeclared)).message).toMatch(
      /does not decompress within 4194304 bytes/,
    );
    const justOver = forge(
      RAW,
      id,
      1,
      compress(Buffer.alloc(BACKUP_CHUNK_BYTES + 1), { contentSizeFlag: false }),
    );
    expect(corrupt(() => keys.openChunk(id, justOver)).message).toMatch(/does not decompress/);
    const rawOver = forge(RAW, id, 0, Buffer.alloc(BACKUP_CHUNK_BYTES + 1000));
    expect(corrupt(() => keys.openChunk(id, rawOver)).message).toMatch(/more than 4194304/);
    const twoFrames = forge(
      RAW,
      id,
      1,
      Buffer.concat([compress(Buffer.alloc(3 << 20)), compress(Buffer.alloc(3 << 20))]),
    );
    expect(corrupt(() => keys.openChunk(id, twoFrames)).message).toMatch(/does not decompress/);
    const garbage = forge(RAW, id, 1, Buffer.from('not zstd at all'));
    expect(corrupt(() => keys.openChunk(id, garbage)).message).toMatch(/does not decompress/);
  });

  describe('manifests', () => {
    const body: Omit<Manifest, 'signature'> = {
      version: 1,
      id: 'web1@20261201T020000Z',
      vm: 'web1',
      host: 'host1',
      policy: 'nightly',
      createdAt: '2026-12-01T02:00:00Z',
      finishedAt: '2026-12-01T02:01:00Z',
      consistency: 'frozen',
      keyFingerprint: keys.fingerprint,
      disks: [
        {
          name: 'root',
          sizeBytes: 8 << 20,
          chunkBytes: BACKUP_CHUNK_BYTES,
          chunks: [keys.chunkId(Buffer.from('a')), ZERO_CHUNK(keys, BACKUP_CHUNK_BYTES)],
          mode: 'full',
          fullReason: 'first',
          readBytes: 4 << 20,
          newChunks: 2,
          storedBytes: 300,
        },
      ],
      config: keys.sealConfig({ name: 'web1' }),
    };
    const m: Manifest = { ...body, signature: keys.signManifest(body) };

    it('signs the canonical JSON without the signature; key order does not matter', () => {
      expect(m.signature).toBe(
        createHmac('sha256', derive(RAW, 'manifest')).update(canonicalJson(body)).digest('hex'),
      );
      keys.verifyManifest(m);
      const reordered = JSON.parse(
        JSON.stringify(Object.fromEntries(Object.entries(m).reverse())),
      ) as Manifest;
      keys.verifyManifest(reordered);
      expect(keys.signManifest(m)).toBe(m.signature); // a full manifest's own signature is left out
      expect(canonicalJson({ b: 1, a: [{ d: 2, c: undefined }] })).toBe('{"a":[{"d":2}],"b":1}');
    });

    it('refuses another key first (KeyMismatchError naming both), then any alteration (CorruptDataError)', () => {
      const other = BackupKeySet.fromKey(newBackupKey(), 'other-key');
      let err: unknown;
      try {
        other.verifyManifest(m);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KeyMismatchError);
      expect((err as Error).message).toContain(keys.fingerprint);
      expect((err as Error).message).toContain(`other-key (${other.fingerprint})`);
      const altered = structuredClone(m);
      altered.disks[0]!.chunks[1] = altered.disks[0]!.chunks[0]!;
      expect(corrupt(() => keys.verifyManifest(altered)).message).toMatch(/web1@20261201T020000Z.*signature/);
      expect(corrupt(() => keys.verifyManifest({ ...m, host: 'host2' })).subject).toBe(
        'snapshot/web1@20261201T020000Z',
      );
      expect(() => keys.verifyManifest({ ...m, signature: 'ab' })).toThrow(CorruptDataError);
      // Signed by another key but claiming ours: the signature gives it away.
      const forged = { ...body, signature: other.signManifest(body) };
      expect(() => keys.verifyManifest(forged)).toThrow(CorruptDataError);
    });
  });

  it('seals the VM config: only its key opens it, any change is found', () => {
    const cfg = { name: 'web1', memoryMiB: 512, nics: [{ network: 'lan', mac: '52:54:00:00:00:01' }] };
    const sealed = keys.sealConfig(cfg);
    expect(sealed).not.toContain('web1');
    expect(keys.openConfig(sealed)).toEqual(cfg);
    expect(() => BackupKeySet.fromKey(newBackupKey()).openConfig(sealed)).toThrow(/fails authentication/);
    const raw = Buffer.from(sealed, 'base64');
    raw[raw.length - 1]! ^= 1;
    expect(() => keys.openConfig(raw.toString('base64'))).toThrow(CorruptDataError);
    for (const bad of ['', 'AAAA', '!!!', 'A'.repeat(2 * 1024 * 1024)]) {
      expect(() => keys.openConfig(bad)).toThrow(CorruptDataError);
    }
    expect(() => keys.sealConfig({ blob: 'x'.repeat(1024 * 1024) })).toThrow(InvalidRequestError);
  });

  it('computes the zero chunk id once per key and length', () => {
    expect(ZERO_CHUNK(keys, BACKUP_CHUNK_BYTES)).toBe(keys.chunkId(Buffer.alloc(BACKUP_CHUNK_BYTES)));
    expect(ZERO_CHUNK(keys, 4096)).toBe(keys.chunkId(Buffer.alloc(4096)));
    expect(ZERO_CHUNK(keys, 4096)).not.toBe(ZERO_CHUNK(keys, 8192));
    const fresh = BackupKeySet.fromKey(RAW);
    const spy = vi.spyOn(fresh, 'chunkId');
    for (let i = 0; i < 100; i++)
      expect(ZERO_CHUNK(fresh, BACKUP_CHUNK_BYTES)).toBe(ZERO_CHUNK(keys, BACKUP_CHUNK_BYTES));
    expect(spy).toHaveBeenCalledTimes(1);
    expect(() => ZERO_CHUNK(keys, BACKUP_CHUNK_BYTES + 1)).toThrow(InvalidRequestError);
    expect(() => ZERO_CHUNK(keys, -1)).toThrow(InvalidRequestError);
  });
});

describe('recovery keys', () => {
  it('prints vlbk1- and base32 groups of 4, and reads it back however it is typed', () => {
    const raw = newBackupKey();
    const text = recoveryKeyText(raw);
    expect(text).toMatch(/^vlbk1-([A-Z2-7]{4}-){14}[A-Z2-7]{2}$/);
    for (const typed of [
      text,
      text.toLowerCase(),
      text.replace(/-/g, ' '),
      text.slice('vlbk1-'.length),
      text.replace(/-/g, '').replace(/(.{20})/g, '$1\n'),
      `  ${text}  `,
    ]) {
      expect(parseRecoveryKey(typed).equals(raw), typed).toBe(true);
    }
    expect(() => recoveryKeyText(Buffer.alloc(31))).toThrow(InvalidRequestError);
    expect(recoveryKeyText(RAW)).toBe(
      // golden: a printed recovery key must stay readable by every later vmlink
      'vlbk1-AEAQ-CAIB-AEAQ-CAIB-AEAQ-CAIB-AEAQ-CAIB-AEAQ-CAIB-AEAQ-CAIB-AEAU-DGZM-PE',
    );
  });

  it('refuses typos by the checksum, characters outside base32 by position, other lengths and versions', () => {
    const text = recoveryKeyText(RAW);
    const body = text.slice(6);
    const swapped = `vlbk1-${body[1]}${body[0]}${body.slice(2)}`;
    expect(() => parseRecoveryKey(swapped)).toThrow(/checksum does not match: a character is mistyped/);
    expect(() => parseRecoveryKey(`vlbk1-0${body.slice(1)}`)).toThrow(
      /character "0" at position 1 is not base32/,
    );
    expect(() => parseRecoveryKey(text.slice(0, -1))).toThrow(/has 57 characters, a recovery key has 58/);
    expect(() => parseRecoveryKey(`${text}A`)).toThrow(/59 characters/);
    expect(() => parseRecoveryKey(`vlbk2-${body}`)).toThrow(/version vlbk2 is unknown/);
    expect(() => parseRecoveryKey('')).toThrow(InvalidRequestError);
  });

  it('round-trips any key, and finds any one mistyped character (property)', () => {
    const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.nat(57),
        fc.integer({ min: 1, max: 31 }),
        (bytes, pos, delta) => {
          const raw = Buffer.from(bytes);
          const text = recoveryKeyText(raw);
          expect(parseRecoveryKey(text).equals(raw)).toBe(true);
          const chars = text.slice(6).replace(/-/g, '').split('');
          chars[pos] = B32[(B32.indexOf(chars[pos]!) + delta) % 32]!;
          expect(() => parseRecoveryKey(chars.join(''))).toThrow(InvalidRequestError);
        },
      ),
      { numRuns: 300 },
    );
  });
});
