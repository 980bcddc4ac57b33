// One sealing thread (seal-workers.ts starts them): chunk ids, sealing and opening under the keys of the jobs running
// now, off the thread that does the jobs' I/O.
import { parentPort } from 'node:worker_threads';
import { BackupKeySet } from '../../shared/backup-crypto.js';
import { toErrorBody, VmlinkError } from '../../shared/errors.js';
import { movable, type SealReply, type SealRequest } from './seal-protocol.js';

const port = parentPort;
if (!port) throw new Error('seal-worker.ts runs as a worker thread of seal-workers.ts only');
const keys = new Map<number, BackupKeySet>();

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
      if (m.op === 'identify') {
        id = k.chunkId(input);
        out = input;
      } else if (m.op === 'seal') out = k.sealChunk(m.id!, input);
      else out = k.openChunk(m.id!, input);
      const mv = movable(out);
      transfer.push(mv.ab);
      reply = { seq: m.seq, ok: true, ...(id ? { id } : {}), ...mv };
    }
  } catch (e) {
    reply = { seq: m.seq, ok: false, error: toErrorBody(e), vmlink: e instanceof VmlinkError };
  }
  port.postMessage(reply, transfer);
});
port.postMessage({ ready: true });
