// The NBD client's typed errors (nbd-client.ts): an option's error reply during the handshake, and a request's error
// reply, each naming the export and socket and quoting the server's message made safe.
import {
  ForbiddenError,
  InvalidRequestError,
  NotFoundError,
  UnavailableError,
  UnsupportedError,
  VmlinkError,
} from '../../shared/errors.js';
import { CMD_NAMES, ERRNO_NAMES, type Pending, quoted, REP_ERR, REP_ERR_NAMES } from './nbd-protocol.js';

/** The connection an error names. */
export interface NbdWhere {
  /** `NBD export "NAME" on SOCKET`. */
  what: string;
  exportName: string;
  socketPath: string;
}

/** The error of an option's error reply `type` (with the server's `message`). */
export function optionError(w: NbdWhere, opt: number, type: number, message: Buffer): Error {
  const code = type & ~REP_ERR;
  const why = `${REP_ERR_NAMES[code] ?? `error ${code}`}${message.length > 0 ? `: ${quoted(message)}` : ''}`;
  if (code === 6) {
    const e = new NotFoundError('NBD export', w.exportName);
    e.message = `${w.what} not found (${why})`;
    return e;
  }
  if (code === 1 || code === 4) return new UnsupportedError(`${w.what}: option ${opt} ${why}`, w.socketPath);
  if (code === 2) return new ForbiddenError(`${w.what}: option ${opt} ${why}`, w.socketPath);
  return new UnavailableError(`${w.what}: option ${opt} ${why}`, w.socketPath);
}

/** The error of request `p`'s error reply `errno` (with the server's `message`). */
export function requestError(w: NbdWhere, p: Pending, errno: number, message?: Buffer): Error {
  const name = ERRNO_NAMES[errno] ?? `error ${errno}`;
  const msg = `${w.what}: ${CMD_NAMES[p.cmd]} of ${p.length} bytes at ${p.offset} failed: ${name}${message && message.length > 0 ? ` (${quoted(message)})` : ''}`;
  if (errno === 1) return new ForbiddenError(msg, w.socketPath);
  if (errno === 22 || errno === 75) return new InvalidRequestError(msg, w.socketPath);
  if (errno === 95) return new UnsupportedError(msg, w.socketPath);
  return new VmlinkError('unavailable', msg, { subject: w.socketPath });
}
