// How a Store value is written: JSON text of at most STORE_VALUE_MAX_BYTES in both stores, and in etcd, from
// STORE_COMPRESS_MIN_BYTES on, one zstd frame. A value stays ONE key written by one request, so a reader never sees
// half of it, and compare-and-set keeps working on it; a 1,000-host spec (~1.4 MB of YAML) compresses ~10x and fits
// an etcd value (ETCD_VALUE_MAX_BYTES). Plain JSON values written before still read: JSON never starts with zstd's
// magic bytes. What is read from etcd is untrusted: its stored size is checked before anything else, and a frame is
// expanded only into a buffer of STORE_VALUE_MAX_BYTES (no zip bomb). Owner records, which agents read straight from
// etcd, are far below the compression threshold and stay plain JSON.
import { compress } from 'zstd-napi';
import { InvalidRequestError, InvalidStateError } from '../../shared/errors.js';
import {
  ETCD_VALUE_MAX_BYTES,
  STORE_COMPRESS_MIN_BYTES,
  STORE_VALUE_MAX_BYTES,
} from '../../shared/limits.js';
import { boundedDecompress, isZstdFrame } from '../../shared/zstd.js';

/** zstd level of a stored value: 3 (zstd's default) packs a fleet's YAML ~10x at ~200 MB/s. */
const STORE_ZSTD_LEVEL = 3;

/** `value` as JSON text, refused (naming `key`, nothing written) when not JSON or over STORE_VALUE_MAX_BYTES. */
export function storeValueText(value: unknown, key: string): string {
  const text = JSON.stringify(value);
  if (text === undefined)
    throw new InvalidRequestError(`store value of ${key} is not JSON-serialisable`, key);
  // UTF-8 takes at most 3 bytes per UTF-16 unit: count exactly only near the bound.
  const bytes = text.length * 3 <= STORE_VALUE_MAX_BYTES ? 0 : Buffer.byteLength(text);
  if (bytes > STORE_VALUE_MAX_BYTES)
    throw new InvalidRequestError(
      `store value of ${key} is ${bytes} bytes of JSON; a store value is limited to ${STORE_VALUE_MAX_BYTES}`,
      key,
    );
  return text;
}

/** `value` as etcd will hold it: plain JSON text, or one zstd frame of it from STORE_COMPRESS_MIN_BYTES on. */
export function encodeEtcdValue(value: unknown, key: string): string | Buffer {
  const text = storeValueText(value, key);
  if (text.length * 3 < STORE_COMPRESS_MIN_BYTES) return text; // surely under the threshold in UTF-8
  const plain = Buffer.from(text);
  if (plain.length < STORE_COMPRESS_MIN_BYTES) return text;
  const packed = compress(plain, { compressionLevel: STORE_ZSTD_LEVEL });
  if (packed.length > ETCD_VALUE_MAX_BYTES)
    throw new InvalidRequestError(
      `store value of ${key} is ${plain.length} bytes of JSON, ${packed.length} compressed; etcd values are limited to ${ETCD_VALUE_MAX_BYTES}`,
      key,
    );
  return packed;
}

/**
 * `value` as plain JSON text of at most ETCD_VALUE_MAX_BYTES, never compressed: for keys that agents read straight
 * from etcd (the cluster members).
 */
export function encodeEtcdPlain(value: unknown, key: string): string {
  const text = storeValueText(value, key);
  const bytes = Buffer.byteLength(text);
  if (bytes > ETCD_VALUE_MAX_BYTES)
    throw new InvalidRequestError(
      `store value of ${key} is ${bytes} bytes; etcd values read by agents are limited to ${ETCD_VALUE_MAX_BYTES}`,
      key,
    );
  return text;
}

/** Parses a value read from etcd (plain JSON or a zstd frame of it): refused unparsed, naming `key`, when too large, a
 * broken frame, or not JSON. */
export function decodeEtcdValue(raw: Buffer, key: string): unknown {
  if (raw.length > ETCD_VALUE_MAX_BYTES)
    throw new InvalidStateError(
      `etcd value of ${key} is ${raw.length} bytes, over the ${ETCD_VALUE_MAX_BYTES} limit: refused`,
      key,
    );
  let text: Buffer = raw;
  if (isZstdFrame(raw)) {
    try {
      text = boundedDecompress(raw, STORE_VALUE_MAX_BYTES);
    } catch (e) {
      throw new InvalidStateError(
        `etcd value of ${key} is not a readable compressed value (${(e as Error).message}): refused`,
        key,
      );
    }
  }
  try {
    return JSON.parse(text.toString('utf8'));
  } catch {
    throw new InvalidStateError(`etcd value of ${key} is not JSON`, key);
  }
}
