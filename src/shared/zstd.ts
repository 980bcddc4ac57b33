// Bounded zstd decompression, shared by the backup chunks and the store's large values: input is untrusted, so a
// frame is expanded only into a buffer of a known bound, never grown (no zip bomb).
import zstd from 'zstd-napi/binding.js';

/** A zstd frame starts with these four bytes (RFC 8878); JSON text never does (0x28 is `(`). */
export const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** Whether `b` starts like a zstd frame. */
export function isZstdFrame(b: Buffer): boolean {
  return b.length >= 4 && b.subarray(0, 4).equals(ZSTD_MAGIC);
}

/** Decompresses a zstd frame into at most `max` bytes: a frame that would expand further is refused (a bomb). */
export function boundedDecompress(src: Buffer, max: number): Buffer {
  const declared = zstd.getFrameContentSize(src);
  if (declared !== null && declared > max) throw new Error(`it declares ${declared} bytes, more than ${max}`);
  // ZSTD_decompress writes into a fixed buffer and fails when the content does not fit: no growth, no window beyond it.
  const out = Buffer.allocUnsafe(declared ?? max);
  const n = zstd.decompress(out, src);
  return n === out.length ? out : out.subarray(0, n);
}
