// The NBD client's negotiation phase (proto.md: fixed newstyle handshake): the greeting, structured replies, meta
// contexts (`base:allocation`, `qemu:dirty-bitmap:NAME`) and GO with block sizes. Every option reply is bounded in size
// and count before it is read; an error reply becomes a typed error (nbd-errors.ts). The connection (nbd-client.ts)
// passes what it owns: the socket, its reader, and how it fails.
import type { Socket } from 'node:net';
import { type BadResponseError, UnsupportedError } from '../../shared/errors.js';
import {
  NBD_OPTION_REPLIES_MAX,
  NBD_OPTION_REPLY_MAX_BYTES,
  NBD_PAYLOAD_MAX_BYTES,
} from '../../shared/limits.js';
import { type NbdWhere, optionError } from './nbd-errors.js';
import {
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  NBDMAGIC,
  NbdFlag,
  NbdInfo,
  NbdOpt,
  NbdRep,
  OLDSTYLE_MAGIC,
  OPT_REPLY_MAGIC,
  quoted,
  REP_ERR,
  type SocketReader,
  u64,
} from './nbd-protocol.js';

/** What negotiation needs of the connection: its socket and reader, and how it fails. */
export interface HandshakeIo {
  readonly sock: Socket;
  readonly reader: SocketReader;
  readonly where: NbdWhere;
  /** Fails the connection with a `BadResponseError` saying the server broke the protocol. */
  violation(message: string): BadResponseError;
  /** Fails the connection with `e` (a refusal that is no protocol violation), and returns it. */
  refuse(e: Error): Error;
}

/** What the server said about the export: its size and flags, block sizes, and the meta contexts' ids. */
export interface Negotiated {
  sizeBytes: number;
  readOnly: boolean;
  transmissionFlags: number;
  /** From NBD_INFO_BLOCK_SIZE (1 and 32 MiB when the server sends none). */
  minBlock: number;
  maxPayload: number;
  /** Negotiated meta contexts: name -> id. */
  contexts: Map<string, number>;
}

/** Negotiates export `io.where.exportName` with meta `contexts`; the connection is ready for requests after it. */
export async function negotiate(io: HandshakeIo, contexts: string[]): Promise<Negotiated> {
  const { what, socketPath } = io.where;
  const hello = await io.reader.read(18);
  if (hello.readBigUInt64BE(0) !== NBDMAGIC) throw io.violation('no NBDMAGIC greeting');
  const second = hello.readBigUInt64BE(8);
  if (second === OLDSTYLE_MAGIC)
    throw io.refuse(new UnsupportedError(`${what} speaks the oldstyle protocol only`, socketPath));
  if (second !== IHAVEOPT) throw io.violation('unknown handshake magic');
  const flags = hello.readUInt16BE(16);
  if (!(flags & FLAG_FIXED_NEWSTYLE))
    throw io.refuse(new UnsupportedError(`${what} does not offer the fixed newstyle handshake`, socketPath));
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES));
  io.sock.write(clientFlags);

  // Structured replies: needed for sparse reads and block status.
  await option(io, NbdOpt.STRUCTURED_REPLY, Buffer.alloc(0), (type) => {
    if (type !== NbdRep.ACK) throw io.violation(`reply ${type} to STRUCTURED_REPLY`);
    return true;
  });

  const out: Negotiated = {
    sizeBytes: 0,
    readOnly: false,
    transmissionFlags: 0,
    minBlock: 1,
    maxPayload: NBD_PAYLOAD_MAX_BYTES,
    contexts: new Map(),
  };
  if (contexts.length > 0) await setMetaContexts(io, contexts, out.contexts);

  // GO, asking for block sizes (so we promise to honour them).
  const name = Buffer.from(io.where.exportName, 'utf8');
  const go = Buffer.alloc(4 + name.length + 2 + 2);
  go.writeUInt32BE(name.length, 0);
  name.copy(go, 4);
  go.writeUInt16BE(1, 4 + name.length);
  go.writeUInt16BE(NbdInfo.BLOCK_SIZE, 6 + name.length);
  let gotExport = false;
  await option(io, NbdOpt.GO, go, (type, data) => {
    if (type === NbdRep.ACK) {
      if (!gotExport) throw io.violation('GO acknowledged without NBD_INFO_EXPORT');
      return true;
    }
    if (type !== NbdRep.INFO) throw io.violation(`reply ${type} to GO`);
    if (data.length < 2) throw io.violation('NBD_REP_INFO shorter than its type');
    const info = data.readUInt16BE(0);
    if (info === NbdInfo.EXPORT) {
      if (data.length !== 12) throw io.violation(`NBD_INFO_EXPORT of ${data.length} bytes`);
      const size = u64(data, 2);
      if (!Number.isSafeInteger(size)) throw io.violation('export size beyond 2^53');
      out.sizeBytes = size;
      out.transmissionFlags = data.readUInt16BE(10);
      out.readOnly = (out.transmissionFlags & NbdFlag.READ_ONLY) !== 0;
      gotExport = true;
    } else if (info === NbdInfo.BLOCK_SIZE) {
      if (data.length !== 14) throw io.violation(`NBD_INFO_BLOCK_SIZE of ${data.length} bytes`);
      const min = data.readUInt32BE(2);
      const preferred = data.readUInt32BE(6);
      const max = data.readUInt32BE(10);
      const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
      if (!pow2(min) || min > 65_536 || !pow2(preferred) || preferred < min || max < min || max < preferred)
        throw io.violation(`block sizes min ${min}, preferred ${preferred}, max ${max} are not valid`);
      out.minBlock = min;
      out.maxPayload = Math.min(NBD_PAYLOAD_MAX_BYTES, max - (max % min));
    }
    // Other infos (name, description) are not needed.
    return false;
  });
  return out;
}

/** SET_META_CONTEXT for `contexts`: each answered once, with an id of its own, into `got`; one lacking is refused. */
async function setMetaContexts(io: HandshakeIo, contexts: string[], got: Map<string, number>): Promise<void> {
  const name = Buffer.from(io.where.exportName, 'utf8');
  const queries = contexts.map((c) => Buffer.from(c, 'utf8'));
  const data = Buffer.alloc(4 + name.length + 4 + queries.reduce((n, q) => n + 4 + q.length, 0));
  let at = data.writeUInt32BE(name.length, 0);
  at += name.copy(data, at);
  at = data.writeUInt32BE(queries.length, at);
  for (const q of queries) {
    at = data.writeUInt32BE(q.length, at);
    at += q.copy(data, at);
  }
  await option(io, NbdOpt.SET_META_CONTEXT, data, (type, reply) => {
    if (type === NbdRep.ACK) return true;
    if (type !== NbdRep.META_CONTEXT) throw io.violation(`reply ${type} to SET_META_CONTEXT`);
    if (reply.length < 5) throw io.violation('NBD_REP_META_CONTEXT without a name');
    const id = reply.readUInt32BE(0);
    const ctx = reply.subarray(4).toString('utf8');
    if (!contexts.includes(ctx))
      throw io.violation(`meta context ${JSON.stringify(quoted(reply.subarray(4)))} was not asked for`);
    if (got.has(ctx) || [...got.values()].includes(id))
      throw io.violation(`meta context ${ctx} (id ${id}) answered twice`);
    got.set(ctx, id);
    return false;
  });
  const lacking = contexts.filter((c) => !got.has(c));
  if (lacking.length > 0) {
    const what = lacking.map((c) =>
      c.startsWith('qemu:dirty-bitmap:')
        ? `dirty bitmap ${c.slice('qemu:dirty-bitmap:'.length)}`
        : `meta context ${c}`,
    );
    throw io.refuse(
      new UnsupportedError(
        `${io.where.what} has no ${what.join(', no ')} (the server does not export ${lacking.length === 1 ? 'it' : 'them'})`,
        io.where.socketPath,
      ),
    );
  }
}

/**
 * Sends option `opt` and reads its replies, each handed to `onReply` until it returns true (the last one). Error
 * replies become typed errors; every reply is bounded in size and count.
 */
async function option(
  io: HandshakeIo,
  opt: number,
  data: Buffer,
  onReply: (type: number, data: Buffer) => boolean,
): Promise<void> {
  const head = Buffer.alloc(16);
  head.writeBigUInt64BE(IHAVEOPT, 0);
  head.writeUInt32BE(opt, 8);
  head.writeUInt32BE(data.length, 12);
  io.sock.write(data.length > 0 ? Buffer.concat([head, data]) : head);
  for (let n = 0; ; n++) {
    if (n >= NBD_OPTION_REPLIES_MAX)
      throw io.violation(`more than ${NBD_OPTION_REPLIES_MAX} replies to option ${opt}`);
    const rh = await io.reader.read(20);
    if (rh.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw io.violation('option reply without its magic');
    if (rh.readUInt32BE(8) !== opt) throw io.violation(`reply to option ${rh.readUInt32BE(8)}, not ${opt}`);
    const type = rh.readUInt32BE(12);
    const length = rh.readUInt32BE(16);
    if (length > NBD_OPTION_REPLY_MAX_BYTES)
      throw io.violation(`option reply of ${length} bytes (at most ${NBD_OPTION_REPLY_MAX_BYTES})`);
    const payload = length > 0 ? Buffer.from(await io.reader.read(length)) : Buffer.alloc(0);
    if (type & REP_ERR) throw io.refuse(optionError(io.where, opt, type, payload));
    if (onReply(type, payload)) return;
  }
}
