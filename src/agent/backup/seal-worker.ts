// One sealing thread (seal-workers.ts starts them): chunk ids, sealing and opening under one backup key, off the
// thread that does the job's I/O.
import { parentPort, workerData } from 'node:worker_threads';
import { BackupKeySet } from '../../shared/backup-crypto.js';
import { toErrorBody, VmlinkError } from '../../shared/errors.js';
import { movable, type SealReply, type SealRequest } from './seal-protocol.js';

const port = parentPort;
if (!port) throw new Error('seal-worker.ts runs as a worker thread of seal-workers.ts only');
const { key, name } = workerData as { key: Uint8Array; name: string };
const keys = BackupKeySet.fromKey(Buffer.from(key), name);

port.on('message', (m: SealRequest) => {
  let reply: SealReply;
  const transfer: ArrayBuffer[] = [];
  try {
    const input = Buffer.from(m.ab, m.offset, m.length);
    let id: string | undefined;
    let out: Buffer;
    if (m.op === 'identify') {
      id = keys.chunkId(input);
      out = input;
    } else if (m.op === 'seal') out = keys.sealChunk(m.id!, input);
    else out = keys.openChunk(m.id!, input);
    const mv = movable(out);
    transfer.push(mv.ab);
    reply = { seq: m.seq, ok: true, ...(id ? { id } : {}), ...mv };
  } catch (e) {
    reply = { seq: m.seq, ok: false, error: toErrorBody(e), vmlink: e instanceof VmlinkError };
  }
  port.postMessage(reply, transfer);
});
port.postMessage({ ready: true });
