// Backup crypto and codec (issue 12, docs/backup.md): the keys derived from one 32-byte backup key, chunk ids,
// chunk blobs (zstd, then AES-256-GCM), manifest signatures, the sealed VM config and recovery keys. Pure: node:crypto
// and zstd-napi, no I/O. The VM's host agent seals and opens; a store checks blobs without a key (`blobChecksumOk`).
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';
import zstd from 'zstd-napi/binding.js';
import { BACKUP_BLOB_MAX_BYTES, BACKUP_CHUNK_BYTES, type ChunkId, type Manifest } from './backup.js';
import { markSealedHere } from './backup-sealed.js';
import { CorruptDataError, InvalidRequestError, KeyMismatchError } from './errors.js';
import { boundedDecompress } from './zstd.js';

/** Bytes of a backup key (AES-256). */
export const BACKUP_KEY_BYTES = 32;
/** zstd level of chunks: 1, as Proxmox Backup Server's chunks (about twice level 3's speed, a few % larger). */
export const BACKUP_ZSTD_LEVEL = 1;

const HKDF_SALT = 'vmlink-backup-v1';
const CHUNK_ID = /^[0-9a-f]{64}$/;

// ---- Blob format (docs/backup.md) -----------------------------------------------------------------------------
// "VLCK" | version 1 | codec (0 none, 1 zstd) | 2 bytes zero | SHA-256 (32) | IV (12) | GCM tag (16) | ciphertext
// The SHA-256 covers every byte but its own 32: the 8 header bytes, then IV, tag and ciphertext. The GCM additional
// data is the 8 header bytes followed by the chunk id's 32 bytes, so neither the codec nor the id can be swapped.
const MAGIC = Buffer.from('VLCK', 'latin1');
const VERSION = 1;
export const CODEC_NONE = 0;
export const CODEC_ZSTD = 1;
const HEADER = 8;
const SUM_AT = HEADER;
const IV_AT = SUM_AT + 32;
const TAG_AT = IV_AT + 12;
/** Bytes of a blob before its ciphertext. */
export const BLOB_OVERHEAD = TAG_AT + 16;

/** What is wrong with a blob's framing or checksum (no key needed); undefined when it checks out. */
export function blobProblem(blob: Buffer): string | undefined {
  if (blob.length < BLOB_OVERHEAD)
    return `blob of ${blob.length} bytes is shorter than its ${BLOB_OVERHEAD}-byte header`;
  if (blob.length > BACKUP_BLOB_MAX_BYTES)
    return `blob of ${blob.length} bytes exceeds ${BACKUP_BLOB_MAX_BYTES}`;
  if (!blob.subarray(0, 4).equals(MAGIC)) return 'blob does not start with "VLCK"';
  if (blob[4] !== VERSION) return `blob version ${blob[4]} is not ${VERSION}`;
  if (blob[5] !== CODEC_NONE && blob[5] !== CODEC_ZSTD) return `blob codec ${blob[5]} is unknown`;
  if (blob[6] !== 0 || blob[7] !== 0) return 'blob header reserved bytes are not zero';
  const sum = createHash('sha256').update(blob.subarray(0, HEADER)).update(blob.subarray(IV_AT)).digest();
  if (!sum.equals(blob.subarray(SUM_AT, IV_AT))) return 'blob checksum (SHA-256) does not match its content';
  return undefined;
}

/** Whether a blob's framing and SHA-256 check out (no key: what a store and an offsite pull can check). */
export function blobChecksumOk(blob: Buffer): boolean {
  return blobProblem(blob) === undefined;
}

/** Bytes handed to AES-GCM per call: a whole 4 MiB chunk at once runs several times slower (measured here: each
 * call allocates its output; 64 KiB pieces stay in cache and reuse memory). */
const CIPHER_PIECE = 64 * 1024;

/** Runs `input` through a cipher in pieces into `out` from `at` (then `final()`); returns where it ended. */
function pieces(
  c: { update(b: Buffer): Buffer; final(): Buffer },
  input: Buffer,
  out: Buffer,
  at: number,
): number {
  let end = at;
  for (let i = 0; i < input.length; i += CIPHER_PIECE) {
    end += c.update(input.subarray(i, i + CIPHER_PIECE)).copy(out, end);
  }
  end += c.final().copy(out, end);
  return end;
}

/** Whether `a` and `b` share memory. */
function overlap(a: Buffer, b: Buffer): boolean {
  return (
    a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length
  );
}

/** Bytes of each sample `worthCompressing` tries, and how many samples. */
const PROBE_BYTES = 16 * 1024;
const PROBES = 4;

/**
 * Whether zstd may shrink `plain`: a chunk of 256 KiB or more is compressed only when one of four 16 KiB samples
 * spread over it (zstd level 1) shrinks by 3 % or more. Incompressible chunks (encrypted or media data in the guest)
 * then cost ~2 % of a level-3 pass instead of a whole one; a chunk mostly zero or text anywhere sampled compresses.
 */
function worthCompressing(plain: Buffer): boolean {
  if (plain.length === 0) return false;
  if (plain.length < 16 * PROBE_BYTES) return true;
  for (let i = 0; i < PROBES; i++) {
    const at = Math.floor((i * (plain.length - PROBE_BYTES)) / (PROBES - 1));
    if (compressScratch(plain.subarray(at, at + PROBE_BYTES), 1).length < PROBE_BYTES * 0.97) return true;
  }
  return false;
}

/** This thread's zstd context and output buffer, reused by every chunk it compresses (see `sealChunk`'s `out`). */
let cctx: InstanceType<typeof zstd.CCtx> | undefined;
let scratch: Buffer | undefined;

/**
 * `plain` compressed at `level` into this thread's scratch buffer: a view valid until the next call (the
 * caller copies it into the blob at once).
 */
function compressScratch(plain: Buffer, level = BACKUP_ZSTD_LEVEL): Buffer {
  cctx ??= new zstd.CCtx();
  const bound = zstd.compressBound(plain.length);
  if (!scratch || scratch.length < bound)
    scratch = Buffer.allocUnsafe(Math.max(bound, zstd.compressBound(BACKUP_CHUNK_BYTES)));
  return scratch.subarray(0, cctx.compress(scratch, plain, level));
}

// ---- Canonical JSON (manifest signatures) ------------------------------------------------------------------------

/** JSON with object keys sorted at every level and no whitespace; undefined members are left out (as JSON does). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const s = JSON.stringify(value);
    if (s === undefined) throw new InvalidRequestError(`cannot encode ${typeof value} in canonical JSON`);
    return s;
  }
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

// ---- Sealed config -------------------------------------------------------------------------------------------------

const CONFIG_VERSION = 1;
const CONFIG_AAD = Buffer.from('vmlink-backup-config-v1', 'latin1');
/** Most characters of a sealed config (the manifest schema's bound on `config`). */
export const SEALED_CONFIG_MAX_CHARS = 1024 * 1024;

// ---- Keys ----------------------------------------------------------------------------------------------------------

/** The keys derived (HKDF-SHA256, salt `vmlink-backup-v1`) from one 32-byte backup key; the key itself is not kept. */
export class BackupKeySet {
  /** The key's public fingerprint (32 hex digits, HKDF info `fingerprint`): stores and manifests carry it. */
  readonly fingerprint: string;
  /** A name for messages (the vault secret's name), never the key. */
  readonly name: string;
  readonly #encKey: Buffer;
  readonly #idKey: Buffer;
  readonly #manifestKey: Buffer;
  readonly #configKey: Buffer;
  readonly #raw: Buffer;

  private constructor(raw: Buffer, name: string) {
    this.#raw = Buffer.from(raw);
    const derive = (info: string, n: number) => Buffer.from(hkdfSync('sha256', raw, HKDF_SALT, info, n));
    this.#encKey = derive('enc', 32);
    this.#idKey = derive('id', 32);
    this.#manifestKey = derive('manifest', 32);
    this.#configKey = derive('config', 32);
    this.fingerprint = derive('fingerprint', 16).toString('hex');
    this.name = name;
  }

  /** Derives the key set of a raw 32-byte key; `InvalidRequestError` for any other length. */
  static fromKey(raw: Buffer, name = 'backup key'): BackupKeySet {
    if (!Buffer.isBuffer(raw) || raw.length !== BACKUP_KEY_BYTES) {
      throw new InvalidRequestError(
        `${name}: a backup key is ${BACKUP_KEY_BYTES} bytes, got ${Buffer.isBuffer(raw) ? raw.length : typeof raw}`,
        name,
      );
    }
    return new BackupKeySet(raw, name);
  }

  /**
   * A copy of the raw key, for this process's own worker threads (agent/backup/seal-workers.ts) to derive the same
   * key set: never written, logged or sent anywhere.
   */
  rawKeyForWorkers(): Buffer {
    return Buffer.from(this.#raw);
  }

  /** `fromKey` of a base64 text (as the vault holds it); refuses anything that is not exactly 32 bytes of base64. */
  static fromBase64(b64: string, name = 'backup key'): BackupKeySet {
    const text = b64.trim();
    if (!/^[A-Za-z0-9+/]{43}=$/.test(text)) {
      throw new InvalidRequestError(`${name}: not the base64 of a ${BACKUP_KEY_BYTES}-byte backup key`, name);
    }
    return BackupKeySet.fromKey(Buffer.from(text, 'base64'), name);
  }

  /** A chunk's id: HMAC-SHA256 of its plaintext under the id key, hex. */
  chunkId(plain: Buffer): ChunkId {
    return createHmac('sha256', this.#idKey).update(plain).digest('hex');
  }

  /**
   * Seals a chunk: zstd (level 1; kept raw when that does not shrink it), then AES-256-GCM with a random IV and the
   * header and id as additional data. `id` must be `chunkId(plain)` (not recomputed here: the caller just did).
   * `out`: where to build the blob when it is large enough (a reused buffer: fresh 4 MiB buffers cost more in page
   * faults than the sealing itself); the blob is then a view of it. `out` may hold `plain` itself (sealing in place,
   * so a job needs no second buffer per chunk): the plaintext is then overwritten.
   */
  sealChunk(id: ChunkId, plain: Buffer, out?: Buffer): Buffer {
    if (!CHUNK_ID.test(id))
      throw new InvalidRequestError(`chunk id ${JSON.stringify(id)} is not 64 hex digits`);
    if (plain.length > BACKUP_CHUNK_BYTES) {
      throw new InvalidRequestError(
        `chunk ${id} has ${plain.length} bytes, more than ${BACKUP_CHUNK_BYTES}`,
        id,
      );
    }
    const packed = worthCompressing(plain) ? compressScratch(plain) : plain;
    const zstdWins = packed.length < plain.length;
    let body = zstdWins ? packed : plain;
    const header = Buffer.from([...MAGIC, VERSION, zstdWins ? CODEC_ZSTD : CODEC_NONE, 0, 0]);
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#encKey, iv);
    cipher.setAAD(Buffer.concat([header, Buffer.from(id, 'hex')]));
    const size = BLOB_OVERHEAD + body.length; // GCM's ciphertext is as long as its input
    const blob = out && out.length >= size ? out.subarray(0, size) : Buffer.allocUnsafe(size);
    if (overlap(blob, body)) {
      // In place: the body first moves to where its ciphertext goes (copy is a memmove), then is encrypted there
      // piece by piece (each piece is read before its ciphertext is written over it).
      body.copy(blob, BLOB_OVERHEAD);
      body = blob.subarray(BLOB_OVERHEAD);
    }
    header.copy(blob, 0);
    iv.copy(blob, IV_AT);
    if (pieces(cipher, body, blob, BLOB_OVERHEAD) !== blob.length)
      throw new Error('AES-GCM output length changed');
    cipher.getAuthTag().copy(blob, TAG_AT);
    createHash('sha256').update(header).update(blob.subarray(IV_AT)).digest().copy(blob, SUM_AT);
    return markSealedHere(blob);
  }

  /**
   * Opens a blob stored as chunk `id`: checks its framing and checksum, authenticates and decrypts it, decompresses
   * it into at most BACKUP_CHUNK_BYTES, and re-derives its id. `CorruptDataError` naming the chunk otherwise.
   */
  openChunk(id: ChunkId, blob: Buffer): Buffer {
    if (!CHUNK_ID.test(id))
      throw new InvalidRequestError(`chunk id ${JSON.stringify(id)} is not 64 hex digits`);
    const bad = (what: string) => new CorruptDataError(`chunk ${id}: ${what}`, `chunk/${id}`);
    const problem = blobProblem(blob);
    if (problem !== undefined) throw bad(problem);
    const decipher = createDecipheriv('aes-256-gcm', this.#encKey, blob.subarray(IV_AT, TAG_AT));
    decipher.setAAD(Buffer.concat([blob.subarray(0, HEADER), Buffer.from(id, 'hex')]));
    decipher.setAuthTag(blob.subarray(TAG_AT, BLOB_OVERHEAD));
    const body = Buffer.allocUnsafe(blob.length - BLOB_OVERHEAD);
    try {
      pieces(decipher, blob.subarray(BLOB_OVERHEAD), body, 0);
    } catch {
      throw bad(`fails authentication with key ${this.fingerprint}: sealed under another key, or altered`);
    }
    let plain: Buffer;
    if (blob[5] === CODEC_ZSTD) {
      try {
        plain = boundedDecompress(body, BACKUP_CHUNK_BYTES);
      } catch (e) {
        throw bad(`does not decompress within ${BACKUP_CHUNK_BYTES} bytes (${(e as Error).message})`);
      }
    } else {
      plain = body;
      if (plain.length > BACKUP_CHUNK_BYTES)
        throw bad(`holds ${plain.length} bytes, more than ${BACKUP_CHUNK_BYTES}`);
    }
    if (this.chunkId(plain) !== id) throw bad('its content does not match its id');
    return plain;
  }

  /** The manifest's signature: HMAC-SHA256 (manifest key) of its canonical JSON without `signature`, hex. */
  signManifest(m: Omit<Manifest, 'signature'>): string {
    const { signature: _drop, ...rest } = m as Manifest;
    return createHmac('sha256', this.#manifestKey).update(canonicalJson(rest)).digest('hex');
  }

  /**
   * Checks a manifest was made with this key (`KeyMismatchError` naming both fingerprints) and not altered since
   * (`CorruptDataError` naming the snapshot). The fingerprint is compared first, so a wrong key reads as one.
   */
  verifyManifest(m: Manifest): void {
    if (m.keyFingerprint !== this.fingerprint) {
      throw new KeyMismatchError(
        `snapshot ${m.id} was made with the backup key of fingerprint ${m.keyFingerprint}, not ${this.name} (${this.fingerprint})`,
        `snapshot/${m.id}`,
      );
    }
    const want = Buffer.from(this.signManifest(m), 'hex');
    const got = Buffer.from(typeof m.signature === 'string' ? m.signature : '', 'hex');
    if (got.length !== want.length || !timingSafeEqual(got, want)) {
      throw new CorruptDataError(
        `snapshot ${m.id}: its manifest's signature does not match: altered`,
        `snapshot/${m.id}`,
      );
    }
  }

  /** Seals the VM's launch config (JSON) under the config key: base64 of version | IV | tag | ciphertext. */
  sealConfig(json: unknown): string {
    const plain = Buffer.from(canonicalJson(json), 'utf8');
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#configKey, iv);
    cipher.setAAD(CONFIG_AAD);
    const ct = Buffer.concat([cipher.update(plain), cipher.final()]);
    const out = Buffer.concat([Buffer.from([CONFIG_VERSION]), iv, cipher.getAuthTag(), ct]).toString(
      'base64',
    );
    if (out.length > SEALED_CONFIG_MAX_CHARS) {
      throw new InvalidRequestError(
        `the VM config sealed is ${out.length} characters, more than ${SEALED_CONFIG_MAX_CHARS}`,
      );
    }
    return out;
  }

  /** Opens a sealed config; `CorruptDataError` when it is malformed, under another key, or altered. */
  openConfig(b64: string): unknown {
    const bad = (what: string) => new CorruptDataError(`sealed VM config: ${what}`);
    if (
      typeof b64 !== 'string' ||
      b64.length > SEALED_CONFIG_MAX_CHARS ||
      !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)
    ) {
      throw bad('not base64 of a bounded size');
    }
    const raw = Buffer.from(b64, 'base64');
    if (raw.length < 29 || raw[0] !== CONFIG_VERSION) throw bad('unknown version or truncated');
    const decipher = createDecipheriv('aes-256-gcm', this.#configKey, raw.subarray(1, 13));
    decipher.setAAD(CONFIG_AAD);
    decipher.setAuthTag(raw.subarray(13, 29));
    let plain: Buffer;
    try {
      plain = Buffer.concat([decipher.update(raw.subarray(29)), decipher.final()]);
    } catch {
      throw bad(`fails authentication with key ${this.fingerprint}: sealed under another key, or altered`);
    }
    try {
      return JSON.parse(plain.toString('utf8')) as unknown;
    } catch (e) {
      throw bad(`not JSON (${(e as Error).message})`);
    }
  }
}

// ---- New keys and recovery keys ----------------------------------------------------------------------------------

/** A new backup key: 32 random bytes. */
export function newBackupKey(): Buffer {
  return randomBytes(BACKUP_KEY_BYTES);
}

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const RECOVERY_PREFIX = 'vlbk1-';
const RECOVERY_CHECK_BYTES = 4;

function recoveryCheck(raw: Buffer): Buffer {
  return createHash('sha256')
    .update('vmlink-recovery-v1')
    .update(raw)
    .digest()
    .subarray(0, RECOVERY_CHECK_BYTES);
}

function base32(data: Buffer): string {
  let out = '';
  let bits = 0;
  let acc = 0;
  for (const byte of data) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out;
}

/**
 * The recovery key text of a raw key, printed once at creation: `vlbk1-` then the RFC 4648 base32 (no padding) of
 * key + 4-byte checksum, in groups of 4 joined by dashes.
 */
export function recoveryKeyText(raw: Buffer): string {
  if (!Buffer.isBuffer(raw) || raw.length !== BACKUP_KEY_BYTES) {
    throw new InvalidRequestError(`a backup key is ${BACKUP_KEY_BYTES} bytes`);
  }
  const text = base32(Buffer.concat([raw, recoveryCheck(raw)]));
  return RECOVERY_PREFIX + (text.match(/.{1,4}/g) ?? []).join('-');
}

/** Characters of the base32 text of key + checksum. */
const RECOVERY_CHARS = Math.ceil(((BACKUP_KEY_BYTES + RECOVERY_CHECK_BYTES) * 8) / 5);

/**
 * The raw key of a recovery key text. Tolerates case, spaces, line breaks and a missing prefix; refuses (with
 * `InvalidRequestError` naming the problem) a character outside base32, a wrong length, or a checksum that does
 * not match (a mistyped character).
 */
export function parseRecoveryKey(text: string): Buffer {
  const bad = (what: string) => new InvalidRequestError(`recovery key: ${what}`, 'recovery key');
  if (typeof text !== 'string' || text.length > 400) throw bad('not a recovery key (too long)');
  // Dashes and spaces go first; then a `vlbkN` prefix is told from a bare key's base32 (which may begin with the
  // same letters) by its length.
  let s = text.replace(/[\s-]+/g, '').toUpperCase();
  if (/^VLBK\d/.test(s) && s.length !== RECOVERY_CHARS) {
    if (s[4] !== '1') throw bad(`version vlbk${s[4]} is unknown (this vmlink reads vlbk1)`);
    s = s.slice(5);
  }
  for (let i = 0; i < s.length; i++) {
    if (!B32.includes(s[i]!)) {
      throw bad(
        `character ${JSON.stringify(s[i])} at position ${i + 1} is not base32 (A-Z, 2-7; 0, 1, 8, 9 never occur)`,
      );
    }
  }
  if (s.length !== RECOVERY_CHARS)
    throw bad(`has ${s.length} characters, a recovery key has ${RECOVERY_CHARS}`);
  const bytes = Buffer.alloc(BACKUP_KEY_BYTES + RECOVERY_CHECK_BYTES);
  let bits = 0;
  let acc = 0;
  let at = 0;
  for (const ch of s) {
    acc = (acc << 5) | B32.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      bytes[at++] = (acc >>> (bits - 8)) & 0xff;
      bits -= 8;
    }
    acc &= (1 << bits) - 1;
  }
  if (acc !== 0) throw bad('its last character is wrong (checksum)');
  const raw = bytes.subarray(0, BACKUP_KEY_BYTES);
  if (!recoveryCheck(raw).equals(bytes.subarray(BACKUP_KEY_BYTES))) {
    throw bad('checksum does not match: a character is mistyped');
  }
  return Buffer.from(raw);
}

// ---- Zero chunks -------------------------------------------------------------------------------------------------

const zeroIds = new WeakMap<BackupKeySet, Map<number, ChunkId>>();

/** The id of an all-zero chunk of `length` bytes under `keys` (computed once per key set and length). */
export const ZERO_CHUNK = (keys: BackupKeySet, length: number): ChunkId => {
  if (!Number.isInteger(length) || length < 0 || length > BACKUP_CHUNK_BYTES) {
    throw new InvalidRequestError(`a chunk is 0 to ${BACKUP_CHUNK_BYTES} bytes, not ${length}`);
  }
  let byLength = zeroIds.get(keys);
  if (!byLength) {
    byLength = new Map();
    zeroIds.set(keys, byLength);
  }
  let id = byLength.get(length);
  if (id === undefined) {
    id = keys.chunkId(Buffer.alloc(length));
    byLength.set(length, id);
  }
  return id;
};
