// Messages between the chunk pipeline and its sealing threads (seal-workers.ts, seal-worker.ts). Buffers travel as
// moved ArrayBuffers: a 4 MiB chunk changes thread without a copy.
import type { ErrorBody } from '../../shared/errors.js';

export type SealOp = 'identify' | 'seal' | 'open';

export type SealRequest =
  /** Derive and hold the key set of `key` as `kid` (a job's key) / forget it. */
  | { kind: 'key'; seq: number; kid: number; key: Uint8Array; name: string }
  | { kind: 'forget'; kid: number }
  | {
      kind: 'work';
      seq: number;
      kid: number;
      op: SealOp;
      /** The chunk id (`seal`, `open`). */
      id?: string;
      ab: ArrayBuffer;
      offset: number;
      length: number;
      /** `seal`: a buffer (moved here) to build the blob in when it is large enough, and give the input back. */
      spare?: ArrayBuffer;
      /** `seal`: build the blob in `ab` itself, over the input (which starts at its offset 0). */
      inPlace?: boolean;
    };

export type SealReply =
  | {
      seq: number;
      ok: true;
      id?: string;
      ab?: ArrayBuffer;
      offset?: number;
      length?: number;
      /** `seal` with a spare: the input's buffer, moved back for reuse. */
      input?: ArrayBuffer;
    }
  /** `vmlink`: a VmlinkError as its wire body; otherwise a plain Error's message (kept plain on the other side). */
  | { seq: number; ok: false; error: ErrorBody; vmlink: boolean };

/**
 * The bytes of `b` as something postMessage can move: its own ArrayBuffer when `b` spans all of it (a large
 * `allocUnsafe`, a chunk read), else a copy (a view into a pooled or shared buffer must not be taken from its owner).
 * After the move, `b` reads as empty on the sending side.
 */
export function movable(b: Buffer): { ab: ArrayBuffer; offset: number; length: number } {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer)
    return { ab: b.buffer, offset: 0, length: b.byteLength };
  const copy = new Uint8Array(b.byteLength);
  copy.set(b);
  return { ab: copy.buffer, offset: 0, length: b.byteLength };
}
