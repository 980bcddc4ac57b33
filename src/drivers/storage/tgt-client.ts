// A client of tgtd's control socket (`/var/run/tgtd/socket.<N>`), speaking what `tgtadm` speaks (the wire layout
// and error numbers are tgt-protocol.ts's): one connection per request, values checked before they are sent.
// Why not run `tgtadm`: `--op new --mode account --password X` puts the CHAP password in argv, which any local user
// reads in /proc/PID/cmdline; over the socket it only ever sits in this process's memory and tgtd's. tgtd accepts
// only peers of its own uid and gid (SO_PEERCRED), so this runs as root like tgtd.
import { createConnection } from 'node:net';
import {
  BadResponseError,
  InvalidRequestError,
  TimeoutError,
  UnavailableError,
} from '../../shared/errors.js';
import {
  decodeTgtResponseHeader,
  encodeTgtRequest,
  TGTADM_RSP_BYTES,
  TgtError,
  TgtMode,
  TgtOp,
  type TgtRequest,
} from './tgt-protocol.js';
import { parseTgtTargets, type TgtTarget } from './tgt-show.js';

/** Where tgtd listens for `tgtadm -C N`: `<prefix>.<N>` (tgtd's TGT_IPC_NAMESPACE on Debian). */
export const TGT_SOCKET_PREFIX = '/var/run/tgtd/socket';
/** Highest control port tgtd accepts (a C `short`). */
export const TGT_CONTROL_PORT_MAX = 32_767;
/** How long one request may take (connect, send, answer) before it fails. */
export const TGT_REQUEST_TIMEOUT_MS = 10_000;
/**
 * Most bytes of one answer read: `show` of a pool's most targets (`POOL_VOLUMES_MAX` × ~1.5 KiB) fits with room;
 * a larger answer is refused rather than buffered without end.
 */
export const TGT_RESPONSE_MAX_BYTES = 16 * 1024 * 1024;
// What tgtd can parse back: its parameter string is split at ',' and '=' and ends at NUL, so values must hold
// none of those (or a newline, which would garble its logs). IQNs and addresses are checked more tightly.
const TARGET_NAME = /^iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:[A-Za-z0-9.:_-]+)?$/;
const ACCOUNT_USER = /^[A-Za-z0-9._@:-]{1,64}$/;
// A CHAP secret: printable ASCII without space; tgtd keeps everything after `password=` up to the NUL.
const CHAP_PASSWORD = /^[\x21-\x7e]{1,255}$/;
const PATH_VALUE = /^\/[A-Za-z0-9._+@/-]{0,4094}$/;
const INITIATOR_ADDRESS = /^(ALL|[0-9.]{7,15}(\/\d{1,2})?|[0-9a-fA-F:]{2,39}(\/\d{1,3})?)$/;
const BSTYPE = /^[a-z]{1,16}$/;

function check(value: string, re: RegExp, what: string): string {
  if (!re.test(value))
    throw new InvalidRequestError(`${what} ${JSON.stringify(value)} cannot be given to tgtd`);
  return value;
}
function checkTid(tid: number): number {
  if (!Number.isInteger(tid) || tid < 1 || tid > 0x7fff_ffff)
    throw new InvalidRequestError(`target id ${tid} must be a positive integer`);
  return tid;
}
function checkSid(sid: number): bigint {
  // An iSCSI TSIH is 16 bits and never 0 (session.c skips it).
  if (!Number.isInteger(sid) || sid < 1 || sid > 0xffff)
    throw new InvalidRequestError(`session id ${sid} must be an integer from 1 to 65535`);
  return BigInt(sid);
}
function checkCid(cid: number): number {
  if (!Number.isInteger(cid) || cid < 0 || cid > 0xffff)
    throw new InvalidRequestError(`connection id ${cid} must be an integer from 0 to 65535`);
  return cid;
}
function checkLun(lun: number): bigint {
  if (!Number.isInteger(lun) || lun < 0 || lun > 0xffff)
    throw new InvalidRequestError(`LUN ${lun} must be an integer from 0 to 65535`);
  return BigInt(lun);
}

/** Options of a `TgtClient`. */
export interface TgtClientOptions {
  /** tgtd's `--control-port`. */
  controlPort: number;
  /** Socket path prefix (default `TGT_SOCKET_PREFIX`; tests point it at a fake). */
  socketPrefix?: string;
  timeoutMs?: number;
  maxResponseBytes?: number;
}

/** The control socket of the tgtd started with `--control-port N`. */
export function tgtSocketPath(controlPort: number, prefix = TGT_SOCKET_PREFIX): string {
  if (!Number.isInteger(controlPort) || controlPort < 0 || controlPort > TGT_CONTROL_PORT_MAX)
    throw new InvalidRequestError(`tgtd control port ${controlPort} must be 0..${TGT_CONTROL_PORT_MAX}`);
  return `${prefix}.${controlPort}`;
}

/** Talks to one tgtd over its control socket: one connection per request, as tgtadm does. */
export class TgtClient {
  readonly socketPath: string;
  private readonly timeoutMs: number;
  private readonly maxResponseBytes: number;

  constructor(opts: TgtClientOptions) {
    this.socketPath = tgtSocketPath(opts.controlPort, opts.socketPrefix);
    this.timeoutMs = opts.timeoutMs ?? TGT_REQUEST_TIMEOUT_MS;
    this.maxResponseBytes = opts.maxResponseBytes ?? TGT_RESPONSE_MAX_BYTES;
  }

  /**
   * Sends one request and returns tgtd's text answer (empty for most operations). `what` says what was asked, for
   * the error: `TgtError` when tgtd refuses, `UnavailableError` when nothing listens, `TimeoutError`,
   * `BadResponseError` for an answer that breaks the protocol or passes `maxResponseBytes`.
   */
  request(req: TgtRequest, what: string, subject?: string): Promise<string> {
    const bytes = encodeTgtRequest(req);
    return new Promise((resolve, reject) => {
      const sock = createConnection({ path: this.socketPath });
      const chunks: Buffer[] = [];
      let got = 0;
      let expected: number | undefined;
      let settled = false;
      const finish = (err: Error | undefined, text?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(text ?? '');
      };
      const timer = setTimeout(
        () =>
          finish(
            new TimeoutError(
              `tgtd at ${this.socketPath} did not answer within ${this.timeoutMs} ms (${what})`,
              subject,
            ),
          ),
        this.timeoutMs,
      );
      sock.once('connect', () => sock.write(bytes));
      sock.on('error', (e: NodeJS.ErrnoException) =>
        finish(
          new UnavailableError(
            `tgtd is not answering at ${this.socketPath} (${e.code ?? e.message}); is it running?`,
            subject,
            e,
          ),
        ),
      );
      sock.on('data', (d: Buffer) => {
        got += d.length;
        if (got > TGTADM_RSP_BYTES + this.maxResponseBytes) {
          finish(
            new BadResponseError(`tgtd's answer to ${what} passed ${this.maxResponseBytes} bytes`, subject),
          );
          return;
        }
        chunks.push(d);
        if (expected === undefined && got >= TGTADM_RSP_BYTES) {
          const h = decodeTgtResponseHeader(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
          if (h.err !== 0) {
            finish(new TgtError(h.err, what, subject));
            return;
          }
          if (h.len < TGTADM_RSP_BYTES || h.len - TGTADM_RSP_BYTES > this.maxResponseBytes) {
            finish(new BadResponseError(`tgtd's answer to ${what} has a bad length ${h.len}`, subject));
            return;
          }
          expected = h.len;
        }
        // Joined once, when complete (a large `show` arrives in many pieces).
        if (expected !== undefined && got >= expected) {
          if (got > expected) {
            finish(new BadResponseError(`tgtd's answer to ${what} is longer than it said`, subject));
            return;
          }
          // The text ends with concat_buf's NUL.
          const all = Buffer.concat(chunks);
          finish(undefined, all.subarray(TGTADM_RSP_BYTES).toString('utf8').replace(/\0+$/, ''));
        }
      });
      sock.once('end', () =>
        finish(new BadResponseError(`tgtd closed the socket before answering ${what} in full`, subject)),
      );
    });
  }

  /** `tgtadm --op show --mode system`: tgtd's state, drivers and backing stores (readiness). */
  async showSystem(): Promise<string> {
    return this.request({ mode: TgtMode.system, op: TgtOp.show }, 'show the system');
  }

  /** Every target with its sessions, LUNs, accounts and ACLs (`tgtadm --op show --mode target`). */
  async showTargets(): Promise<TgtTarget[]> {
    return parseTgtTargets(await this.request({ mode: TgtMode.target, op: TgtOp.show }, 'show the targets'));
  }

  /** `--op new --mode target --tid T --targetname NAME`. */
  async newTarget(tid: number, name: string): Promise<string> {
    return this.request(
      {
        mode: TgtMode.target,
        op: TgtOp.new,
        tid: checkTid(tid),
        params: [['targetname', check(name, TARGET_NAME, 'target name')]],
      },
      `create target ${tid} ${name}`,
      name,
    );
  }

  /** `--op delete --mode target --tid T [--force]`: `TgtError` TARGET_ACTIVE while an initiator is logged in. */
  async deleteTarget(tid: number, force = false): Promise<string> {
    return this.request(
      { mode: TgtMode.target, op: TgtOp.delete, tid: checkTid(tid), force },
      `delete target ${tid}`,
    );
  }

  /** `--op new --mode logicalunit --tid T --lun L --backing-store PATH --bstype TYPE`. */
  async newLun(tid: number, lun: number, backingStore: string, bstype = 'rdwr'): Promise<string> {
    return this.request(
      {
        mode: TgtMode.device,
        op: TgtOp.new,
        tid: checkTid(tid),
        lun: checkLun(lun),
        params: [
          ['path', check(backingStore, PATH_VALUE, 'backing store')],
          ['bstype', check(bstype, BSTYPE, 'backing store type')],
        ],
      },
      `add LUN ${lun} (${backingStore}) to target ${tid}`,
      backingStore,
    );
  }

  /** `--op delete --mode logicalunit --tid T --lun L`. */
  async deleteLun(tid: number, lun: number): Promise<string> {
    return this.request(
      { mode: TgtMode.device, op: TgtOp.delete, tid: checkTid(tid), lun: checkLun(lun) },
      `delete LUN ${lun} of target ${tid}`,
    );
  }

  /**
   * `--op new --mode account --user U --password P`, over the socket only: the password is never in an argv, a
   * file or a message (errors name the user).
   */
  async newAccount(user: string, password: string): Promise<string> {
    check(user, ACCOUNT_USER, 'CHAP user');
    if (!CHAP_PASSWORD.test(password))
      throw new InvalidRequestError(
        `the CHAP secret of ${user} must be 1 to 255 printable ASCII characters without spaces`,
        user,
      );
    // tgtd takes the user up to the first ',' and the password after `password=`: this order, nothing after.
    return this.request(
      {
        mode: TgtMode.account,
        op: TgtOp.new,
        params: [
          ['user', user],
          ['password', password],
        ],
      },
      `create account ${user}`,
      user,
    );
  }

  /** `--op delete --mode account --user U` (also unbinds it from every target). */
  async deleteAccount(user: string): Promise<string> {
    return this.request(
      { mode: TgtMode.account, op: TgtOp.delete, params: [['user', check(user, ACCOUNT_USER, 'CHAP user')]] },
      `delete account ${user}`,
      user,
    );
  }

  /** Account names (`--op show --mode account`). */
  async showAccounts(): Promise<string[]> {
    const text = await this.request({ mode: TgtMode.account, op: TgtOp.show }, 'show the accounts');
    return text
      .split('\n')
      .slice(1) // "Account list:"
      .map((l) => l.trim().replace(/ \(outgoing\)$/, ''))
      .filter((l) => l !== '');
  }

  /** `--op bind --mode account --tid T --user U`: initiators of target T must pass CHAP as U. */
  async bindAccount(tid: number, user: string): Promise<string> {
    return this.request(
      {
        mode: TgtMode.account,
        op: TgtOp.bind,
        tid: checkTid(tid),
        params: [['user', check(user, ACCOUNT_USER, 'CHAP user')]],
      },
      `bind account ${user} to target ${tid}`,
      user,
    );
  }

  /** `--op unbind --mode account --tid T --user U`. */
  async unbindAccount(tid: number, user: string): Promise<string> {
    return this.request(
      {
        mode: TgtMode.account,
        op: TgtOp.unbind,
        tid: checkTid(tid),
        params: [['user', check(user, ACCOUNT_USER, 'CHAP user')]],
      },
      `unbind account ${user} from target ${tid}`,
      user,
    );
  }

  /** `--op bind --mode target --tid T --initiator-address A` (an address, a CIDR network, or ALL). */
  async bindInitiatorAddress(tid: number, address: string): Promise<string> {
    return this.request(
      {
        mode: TgtMode.target,
        op: TgtOp.bind,
        tid: checkTid(tid),
        params: [['initiator-address', check(address, INITIATOR_ADDRESS, 'initiator address')]],
      },
      `allow ${address} on target ${tid}`,
      address,
    );
  }

  /**
   * `--op delete --mode conn --tid T --sid S --cid C`: tgtd closes that connection of session S (the "I_T nexus" of
   * `show`), and the session ends with its last connection. The initiator may log in again at once unless the
   * target's ACL or account refuses it: change those first. tgtd has no delete for a whole session over iSCSI
   * (`--mode session --op delete` is an invalid request there), so a session goes connection by connection.
   */
  async closeConnection(tid: number, sid: number, cid: number): Promise<string> {
    return this.request(
      {
        mode: TgtMode.connection,
        op: TgtOp.delete,
        tid: checkTid(tid),
        sid: checkSid(sid),
        cid: checkCid(cid),
      },
      `close connection ${cid} of session ${sid} on target ${tid}`,
    );
  }

  /** `--op unbind --mode target --tid T --initiator-address A`. */
  async unbindInitiatorAddress(tid: number, address: string): Promise<string> {
    return this.request(
      {
        mode: TgtMode.target,
        op: TgtOp.unbind,
        tid: checkTid(tid),
        params: [['initiator-address', check(address, INITIATOR_ADDRESS, 'initiator address')]],
      },
      `remove ${address} from target ${tid}`,
      address,
    );
  }
}
