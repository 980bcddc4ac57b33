// A client of tgtd's control socket (`/var/run/tgtd/socket.<N>`), speaking what `tgtadm` speaks: a fixed
// `struct tgtadm_req` header plus a NUL-terminated parameter string; tgtd answers `struct tgtadm_rsp` plus text.
// Why not run `tgtadm`: `--op new --mode account --password X` puts the CHAP password in argv, which any local user
// reads in /proc/PID/cmdline; over the socket it only ever sits in this process's memory and tgtd's. tgtd accepts
// only peers of its own uid and gid (SO_PEERCRED), so this runs as root like tgtd. Layout: tgt usr/tgtadm.h
// (1.0.85), native byte order; the header is 120 bytes on 64-bit Linux.
import { createConnection } from 'node:net';
import { endianness } from 'node:os';
import {
  BadResponseError,
  InvalidRequestError,
  TimeoutError,
  UnavailableError,
  VmlinkError,
} from '../../shared/errors.js';
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
/** Most bytes of parameters tgtd reads (its MAX_MGT_BUFSIZE): a longer request is refused before it is sent. */
export const TGT_PARAMS_MAX_BYTES = 8 * 1024;

/** `sizeof(struct tgtadm_req)`. */
export const TGTADM_REQ_BYTES = 120;
/** `sizeof(struct tgtadm_rsp)`. */
export const TGTADM_RSP_BYTES = 8;

/** `enum tgtadm_mode`. */
export const TgtMode = {
  system: 0,
  target: 1,
  device: 2,
  portal: 3,
  lld: 4,
  session: 5,
  connection: 6,
  account: 7,
} as const;
/** `enum tgtadm_op`. */
export const TgtOp = {
  new: 0,
  delete: 1,
  show: 2,
  bind: 3,
  unbind: 4,
  update: 5,
  stats: 6,
  start: 7,
  stop: 8,
} as const;

/** `enum tgtadm_errno` with tgtadm's wording of each (tgtadm.c `tgtadm_strerror`), indexed by the number. */
export const TGTADM_ERRORS = [
  ['SUCCESS', 'success'],
  ['UNKNOWN_ERR', 'unknown error'],
  ['NOMEM', 'out of memory'],
  ['NO_DRIVER', "can't find the driver"],
  ['NO_TARGET', "can't find the target"],
  ['NO_LUN', "can't find the logical unit"],
  ['NO_SESSION', "can't find the session"],
  ['NO_CONNECTION', "can't find the connection"],
  ['NO_BINDING', "can't find the binding"],
  ['TARGET_EXIST', 'this target already exists'],
  ['BINDING_EXIST', 'this binding already exists'],
  ['LUN_EXIST', 'this logical unit number already exists'],
  ['ACL_EXIST', 'this access control rule already exists'],
  ['ACL_NOEXIST', 'this access control rule does not exist'],
  ['USER_EXIST', 'this account already exists'],
  ['NO_USER', "can't find the account"],
  ['TOO_MANY_USER', 'too many accounts'],
  ['INVALID_REQUEST', 'invalid request'],
  ['OUTACCOUNT_EXIST', 'this target already has an outgoing account'],
  ['TARGET_ACTIVE', 'this target is still active'],
  ['LUN_ACTIVE', 'this logical unit is still active'],
  ['DRIVER_ACTIVE', 'this driver is busy'],
  ['UNSUPPORTED_OPERATION', "this operation isn't supported"],
  ['UNKNOWN_PARAM', 'unknown parameter'],
  ['PREVENT_REMOVAL', 'this device has Prevent Removal set'],
] as const;
/** Name of a tgtadm error (`TGTADM_<name>`), or `UNKNOWN(<n>)` for a number this table lacks. */
export type TgtErrorName = (typeof TGTADM_ERRORS)[number][0] | `UNKNOWN(${number})`;

const NOT_FOUND = new Set<string>([
  'NO_TARGET',
  'NO_LUN',
  'NO_SESSION',
  'NO_CONNECTION',
  'NO_BINDING',
  'ACL_NOEXIST',
  'NO_USER',
]);
const CONFLICT = new Set<string>([
  'TARGET_EXIST',
  'BINDING_EXIST',
  'LUN_EXIST',
  'ACL_EXIST',
  'USER_EXIST',
  'OUTACCOUNT_EXIST',
  'TARGET_ACTIVE',
  'LUN_ACTIVE',
  'DRIVER_ACTIVE',
  'PREVENT_REMOVAL',
]);
const INVALID = new Set<string>(['INVALID_REQUEST', 'UNSUPPORTED_OPERATION', 'UNKNOWN_PARAM']);

/** tgtd refused a request; `code` is its `tgtadm_errno`, the message tgtadm's wording and what was asked. */
export class TgtError extends VmlinkError {
  readonly code: number;
  readonly errorName: TgtErrorName;
  constructor(code: number, what: string, subject?: string) {
    const entry = TGTADM_ERRORS[code];
    const name: TgtErrorName = entry ? entry[0] : `UNKNOWN(${code})`;
    const text = entry ? entry[1] : `tgtadm error ${code}`;
    const kind = NOT_FOUND.has(name)
      ? 'not-found'
      : CONFLICT.has(name)
        ? 'conflict'
        : INVALID.has(name)
          ? 'invalid'
          : 'exec';
    super(kind, `tgtd refused to ${what}: ${text}`, subject === undefined ? {} : { subject });
    this.code = code;
    this.errorName = name;
  }
}

/** One request to tgtd: the header's fields (the rest zero, as tgtadm sends them) and its parameters. */
export interface TgtRequest {
  mode: number;
  op: number;
  /** Target id; -1 for "all" / none (tgtadm's default). */
  tid?: number;
  /** Logical unit number; none: ~0 (tgtadm's default). */
  lun?: bigint;
  /** Session id: for iSCSI the session's TSIH, which `show` lists as its "I_T nexus". */
  sid?: bigint;
  /** Connection id within the session (`--cid`). */
  cid?: number;
  /** `ACCOUNT_TYPE_OUTGOING` (1) for an outgoing account; 0: incoming. */
  acDir?: number;
  force?: boolean;
  /** `key=value` pairs, joined with `,` as tgtadm joins them; values are checked by the callers below. */
  params?: ReadonlyArray<readonly [string, string]>;
}

const NO_LUN = 0xffff_ffff_ffff_ffffn;
const LLD = 'iscsi';

/** The bytes of a request: header then the parameter string with its NUL (tgtd reads exactly `len` bytes). */
export function encodeTgtRequest(req: TgtRequest): Buffer {
  const params = (req.params ?? []).map(([k, v]) => `${k}=${v}`).join(',');
  const body = params ? Buffer.from(`${params}\0`, 'utf8') : Buffer.alloc(0);
  if (body.length > TGT_PARAMS_MAX_BYTES)
    throw new InvalidRequestError(`tgtd request parameters exceed ${TGT_PARAMS_MAX_BYTES} bytes`);
  const h = Buffer.alloc(TGTADM_REQ_BYTES);
  const le = endianness() === 'LE';
  const u32 = (v: number, at: number) => (le ? h.writeUInt32LE(v, at) : h.writeUInt32BE(v, at));
  const i32 = (v: number, at: number) => (le ? h.writeInt32LE(v, at) : h.writeInt32BE(v, at));
  const u64 = (v: bigint, at: number) => (le ? h.writeBigUInt64LE(v, at) : h.writeBigUInt64BE(v, at));
  u32(req.mode, 0);
  u32(req.op, 4);
  h.write(LLD, 8, 'ascii'); // char lld[64], NUL-padded
  u32(TGTADM_REQ_BYTES + body.length, 72);
  i32(req.tid ?? -1, 76);
  u64(req.sid ?? 0n, 80);
  u64(req.lun ?? NO_LUN, 88);
  u32(req.cid ?? 0, 96);
  // host_no (100) stays 0; device_type (104) 0 is TYPE_DISK.
  u32(req.acDir ?? 0, 108);
  // pack (112) stays 0.
  u32(req.force ? 1 : 0, 116);
  return Buffer.concat([h, body]);
}

/** `struct tgtadm_rsp`: the error number and the answer's whole length (header included). */
export function decodeTgtResponseHeader(b: Buffer): { err: number; len: number } {
  const le = endianness() === 'LE';
  return {
    err: le ? b.readUInt32LE(0) : b.readUInt32BE(0),
    len: le ? b.readUInt32LE(4) : b.readUInt32BE(4),
  };
}

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

/** Whether `e` is tgtd's refusal named `name`. */
export function isTgtError(e: unknown, name: TgtErrorName): e is TgtError {
  return e instanceof TgtError && e.errorName === name;
}

export type { TgtTarget } from './tgt-show.js';
