// tgtd's control protocol, as `tgtadm` speaks it (tgt usr/tgtadm.h, 1.0.85, native byte order): a fixed
// `struct tgtadm_req` header (120 bytes on 64-bit Linux) plus a NUL-terminated `key=value,...` parameter string;
// tgtd answers `struct tgtadm_rsp` (an error number and a length) plus text. Also its error numbers, as typed errors.
import { endianness } from 'node:os';
import { InvalidRequestError, VmlinkError } from '../../shared/errors.js';

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

/** Whether `e` is tgtd's refusal named `name`. */
export function isTgtError(e: unknown, name: TgtErrorName): e is TgtError {
  return e instanceof TgtError && e.errorName === name;
}
