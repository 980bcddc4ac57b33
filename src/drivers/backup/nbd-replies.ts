// The NBD client's reply reader (proto.md, transmission phase): simple and structured replies, each matched to its
// request by cookie, every structured chunk checked against the request before its payload is read (data and holes
// inside the read and overlapping nothing, extents of a negotiated context inside the range, error messages bounded).
// A read's data lands straight in the request's buffer. The connection (nbd-client.ts) owns the requests in flight.
import type { BadResponseError } from '../../shared/errors.js';
import { NBD_ERROR_MESSAGE_MAX_BYTES, NBD_EXTENTS_MAX } from '../../shared/limits.js';
import { type NbdWhere, requestError } from './nbd-errors.js';
import {
  CMD_NAMES,
  insertRange,
  NbdCmd,
  NbdReply,
  type Pending,
  REPLY_FLAG_DONE,
  SIMPLE_REPLY_MAGIC,
  type SocketReader,
  STRUCTURED_REPLY_MAGIC,
  u64,
} from './nbd-protocol.js';
import type { NbdExtent } from './types.js';

/** What the reply reader needs of the connection. */
export interface ReplyIo {
  readonly reader: SocketReader;
  readonly where: NbdWhere;
  /** Negotiated meta contexts: name -> id. */
  readonly contexts: ReadonlyMap<string, number>;
  /** The request in flight whose 8-byte cookie is at `buf[at]`; a violation when none is. */
  peek(buf: Buffer, at: number): Pending;
  /** Ends request `p` with what its replies gave. */
  finish(p: Pending): void;
  /** Fails the connection with a `BadResponseError` saying the server broke the protocol. */
  violation(message: string): BadResponseError;
}

/** Reads replies until the connection fails (it rejects with why). */
export async function readReplies(io: ReplyIo): Promise<never> {
  for (;;) {
    const magicBuf = await io.reader.read(4);
    const magic = magicBuf.readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const rest = await io.reader.read(12);
      const error = rest.readUInt32BE(0);
      const p = io.peek(rest, 4);
      if (error === 0 && (p.cmd === NbdCmd.READ || p.cmd === NbdCmd.BLOCK_STATUS))
        throw io.violation(
          `a simple reply with data to a ${CMD_NAMES[p.cmd]} (structured replies were agreed)`,
        );
      if (error !== 0) p.error = requestError(io.where, p, error);
      io.finish(p);
    } else if (magic === STRUCTURED_REPLY_MAGIC) {
      const rest = await io.reader.read(16);
      const flags = rest.readUInt16BE(0);
      const type = rest.readUInt16BE(2);
      const length = rest.readUInt32BE(12);
      const p = io.peek(rest, 4);
      await readChunk(io, p, type, length);
      if (flags & REPLY_FLAG_DONE) io.finish(p);
      else if (type === NbdReply.NONE) throw io.violation('a NONE chunk without the DONE flag');
    } else throw io.violation(`reply magic 0x${magic.toString(16)}`);
  }
}

/** Reads one structured chunk's payload for `p`, checking it against the request before reading it. */
async function readChunk(io: ReplyIo, p: Pending, type: number, length: number): Promise<void> {
  p.chunks++;
  const cmd = CMD_NAMES[p.cmd];
  // Every chunk is at least one byte of reply: a request draws at most one chunk per 512 bytes asked, plus a few.
  if (p.chunks > 64 + Math.ceil(p.length / 512)) throw io.violation(`too many reply chunks to a ${cmd}`);
  switch (type) {
    case NbdReply.NONE:
      if (length !== 0) throw io.violation(`a NONE chunk of ${length} bytes`);
      return;
    case NbdReply.OFFSET_DATA: {
      if (p.cmd !== NbdCmd.READ) throw io.violation(`data in a reply to a ${cmd}`);
      if (length < 9 || length - 8 > p.length)
        throw io.violation(`a data chunk of ${length} bytes to a read of ${p.length}`);
      const off = u64(await io.reader.read(8), 0);
      const n = length - 8;
      cover(io, p, off, n);
      await io.reader.readInto(p.data!, off - p.offset, n);
      return;
    }
    case NbdReply.OFFSET_HOLE: {
      if (p.cmd !== NbdCmd.READ) throw io.violation(`a hole in a reply to a ${cmd}`);
      if (length !== 12) throw io.violation(`a hole chunk of ${length} bytes`);
      const b = await io.reader.read(12);
      const off = u64(b, 0);
      const n = b.readUInt32BE(8);
      cover(io, p, off, n);
      p.data!.fill(0, off - p.offset, off - p.offset + n);
      return;
    }
    case NbdReply.BLOCK_STATUS: {
      if (p.cmd !== NbdCmd.BLOCK_STATUS) throw io.violation(`block status in a reply to a ${cmd}`);
      if (length < 12 || (length - 4) % 8 !== 0 || (length - 4) / 8 > NBD_EXTENTS_MAX)
        throw io.violation(`a block status chunk of ${length} bytes (at most ${NBD_EXTENTS_MAX} extents)`);
      const b = await io.reader.read(length);
      const id = b.readUInt32BE(0);
      if (![...io.contexts.values()].includes(id))
        throw io.violation(`block status of unknown context id ${id}`);
      if (p.contextsSeen!.has(id)) throw io.violation(`block status of context id ${id} twice in one reply`);
      p.contextsSeen!.add(id);
      if (id !== p.context) return;
      const end = p.offset + p.length;
      const extents: NbdExtent[] = [];
      let at = p.offset;
      for (let i = 4; i < length; i += 8) {
        if (at >= end) throw io.violation('block status extents beyond the range asked');
        const len = b.readUInt32BE(i);
        if (len === 0) throw io.violation('a block status extent of length 0');
        extents.push({ offset: at, length: Math.min(len, end - at), flags: b.readUInt32BE(i + 4) });
        at += len;
      }
      p.extents = extents;
      return;
    }
    default: {
      // NBD_REPLY_TYPE_ERROR, ERROR_OFFSET, and error types this client does not know (bit 15 set).
      if (!(type & 0x8000)) throw io.violation(`unknown reply chunk type ${type}`);
      const tail = type === NbdReply.ERROR_OFFSET ? 8 : 0;
      if (length < 6 + tail || length > 6 + NBD_ERROR_MESSAGE_MAX_BYTES + tail)
        throw io.violation(`an error chunk of ${length} bytes`);
      const b = Buffer.from(await io.reader.read(length));
      const errno = b.readUInt32BE(0);
      const msgLen = b.readUInt16BE(4);
      if (errno === 0) throw io.violation('an error chunk with error 0');
      if ((type === NbdReply.ERROR || type === NbdReply.ERROR_OFFSET) && 6 + msgLen + tail !== length)
        throw io.violation('an error chunk whose message length does not add up');
      if (type === NbdReply.ERROR_OFFSET) {
        const off = u64(b, 6 + msgLen);
        if (!(off >= p.offset && off < p.offset + p.length))
          throw io.violation(`an error at offset ${off}, outside the request`);
      }
      p.error ??= requestError(io.where, p, errno, b.subarray(6, 6 + Math.min(msgLen, length - 6)));
      return;
    }
  }
}

/** Records that a read's chunk covers [off, off+n): inside the request, overlapping no earlier chunk. */
function cover(io: ReplyIo, p: Pending, off: number, n: number): void {
  if (!Number.isSafeInteger(off) || n < 1 || off < p.offset || off + n > p.offset + p.length)
    throw io.violation(`a chunk at ${off} (+${n}) outside the read of ${p.length} bytes at ${p.offset}`);
  if (!insertRange(p.covered!, off, off + n)) throw io.violation(`reply chunks overlap at ${off}`);
  p.coveredBytes! += n;
}
