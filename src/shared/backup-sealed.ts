// Blobs this process sealed itself (shared/backup-crypto.ts's sealChunk, the sealing threads' replies): their framing
// and keyless checksum are right by construction, so a local store taking one skips checking them again (a SHA-256 of
// every blob, ~0.6 ms/MiB on the job's thread). Held by identity in a WeakSet: no bytes from a peer, a file or the
// network can be in it (those arrive as buffers of their own), and nothing is kept alive by it.
const sealed = new WeakSet<Buffer>();

/** Records `blob` as sealed by this process (call only on a blob just built by sealing). */
export function markSealedHere(blob: Buffer): Buffer {
  sealed.add(blob);
  return blob;
}

/** Whether `blob` is, by identity, a blob this process sealed. */
export function sealedHere(blob: Buffer): boolean {
  return sealed.has(blob);
}
