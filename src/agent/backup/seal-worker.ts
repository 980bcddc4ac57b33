// One sealing thread (seal-workers.ts starts them): chunk ids, sealing and opening under the keys of the jobs running
// now, off the thread that does the jobs' I/O.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort } from 'node:worker_threads';
import { BackupKeySet } from '../../shared/backup-crypto.js';
import { toErrorBody, VmlinkError } from '../../shared/errors.js';
import { movable, type SealReply, type SealRequest } from './seal-protocol.js';

const port = parentPort;
if (!port) throw new Error('seal-worker.ts runs as a worker thread of seal-workers.ts only');
const keys = new Map<number, BackupKeySet>();

/**
 * A young-generation collection of this thread's heap, run after each seal and open. Their cipher outputs (Node's
 * `cipher.update` allocates each one) are garbage at once, but V8 frees them only at a collection, which external
 * memory alone triggers after ~64 MiB: so each thread's heap spread over ~64 MiB that every backup touched anew, and
 * after the process starts a child (fork write-protects every page) each of those pages faulted again (~50 us here).
 * Collecting at once keeps the thread on a few hot MiB: sealing 25 chunks after a fork, 1.1 -> 0.7 s of CPU and
 * 26 k -> 17 k page faults (docs/backup.md). `gc` comes from a fresh context once the flag is set (undefined if not).
 */
const collectYoung: () => void = (() => {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('typeof gc === "function" ? gc : undefined') as
      | ((o: { type: 'minor' }) => void)
      | undefined;
    return gc ? () => gc({ type: 'minor' }) : () => {};
  } catch {
    return () => {};
  }
})();

port.on('message', (m: SealRequest) => {
  if (m.kind === 'forget') {
    keys.delete(m.kid);
    return;
  }
  let reply: SealReply;
  const transfer: ArrayBuffer[] = [];
  try {
    if (m.kind === 'key') {
      keys.set(m.kid, BackupKeySet.fromKey(Buffer.from(m.key), m.name));
      reply = { seq: m.seq, ok: true };
    } else {
      const k = keys.get(m.kid);
      if (!k) throw new Error(`no key ${m.kid} on this sealing thread`);
      const input = Buffer.from(m.ab, m.offset, m.length);
      let id: string | undefined;
      let out: Buffer;
      // Where a seal builds its blob: the input's own buffer (in place), a spare, or a fresh buffer.
      const home = m.op === 'seal' ? (m.inPlace ? m.ab : m.spare) : undefined;
      if (m.op === 'identify') {
        id = k.chunkId(input);
        out = input;
      } else if (m.op === 'seal') out = k.sealChunk(m.id!, input, home && Buffer.from(home));
      else out = k.openChunk(m.id!, input);
      // The input (identify), or a blob built in its home, goes back as a view of the whole buffer moved here, not
      // copied: the caller reuses that buffer.
      const mv =
        m.op === 'identify'
          ? { ab: m.ab, offset: m.offset, length: m.length }
          : home && out.buffer === home
            ? { ab: home, offset: out.byteOffset, length: out.length }
            : movable(out);
      transfer.push(mv.ab);
      // With a spare, the input goes back too (the caller reuses its buffers); never twice in one transfer list.
      const back = m.spare && m.ab !== mv.ab ? { input: m.ab } : {};
      if (back.input) transfer.push(back.input);
      reply = { seq: m.seq, ok: true, ...(id ? { id } : {}), ...mv, ...back };
    }
  } catch (e) {
    reply = { seq: m.seq, ok: false, error: toErrorBody(e), vmlink: e instanceof VmlinkError };
  }
  port.postMessage(reply, transfer);
  if (m.kind === 'work' && m.op !== 'identify') collectYoung();
});
port.postMessage({ ready: true });
