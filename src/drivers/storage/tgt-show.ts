// Parses tgtd's `show --mode target` text (tgt 1.0.85 layout): sections by indentation, four spaces a level.
// The text comes from tgtd, capped in size by the client; the parser caps what it keeps as well and refuses a
// text it cannot place rather than guessing.
import { BadResponseError } from '../../shared/errors.js';

/** A logged-in initiator (an "I_T nexus"). */
export interface TgtSession {
  nexus: number;
  initiator: string;
  /** Addresses of its connections. */
  addresses: string[];
  /** Its connections: id (`tgtadm --cid`) and the initiator's address. */
  connections: TgtConnection[];
}

/** One connection of a session (tgtd shows the session's first: MaxConnections is 1 by default). */
export interface TgtConnection {
  cid: number;
  address: string;
}

/** A logical unit of a target. */
export interface TgtLun {
  lun: number;
  /** `disk`, `controller` (LUN 0), ... */
  type: string;
  /** `rdwr`, `null` (LUN 0), ... */
  backingStoreType?: string;
  /** The backing file; absent for LUN 0 ("None"). */
  backingStorePath?: string;
}

/** A target as tgtd shows it. */
export interface TgtTarget {
  tid: number;
  name: string;
  state?: string;
  sessions: TgtSession[];
  luns: TgtLun[];
  /** Incoming CHAP accounts bound to it. */
  accounts: string[];
  /** Outgoing (mutual CHAP) accounts. */
  outgoingAccounts: string[];
  /** Initiator addresses allowed (`ALL`, addresses, networks). */
  acls: string[];
}

/** Most targets one answer may list (a storage host's pools' volumes, with room). */
export const TGT_SHOW_TARGETS_MAX = 65_536;
/** Most entries of one list of one target (sessions, LUNs, accounts, ACLs). */
export const TGT_SHOW_LIST_MAX = 4_096;

function push<T>(list: T[], item: T, what: string): void {
  if (list.length >= TGT_SHOW_LIST_MAX)
    throw new BadResponseError(`tgtd listed more than ${TGT_SHOW_LIST_MAX} ${what} for one target`);
  list.push(item);
}

/** The targets in `tgtadm --op show --mode target` output. */
export function parseTgtTargets(text: string): TgtTarget[] {
  const targets: TgtTarget[] = [];
  let t: TgtTarget | undefined;
  let section = '';
  let session: TgtSession | undefined;
  let lun: TgtLun | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line === '') continue;
    const indent = line.length - line.trimStart().length;
    const body = line.trimStart();
    if (indent === 0) {
      const m = /^Target (\d{1,10}): (\S{1,255})$/.exec(body);
      if (!m) throw new BadResponseError(`tgtd's target list has an unexpected line: ${body.slice(0, 80)}`);
      if (targets.length >= TGT_SHOW_TARGETS_MAX)
        throw new BadResponseError(`tgtd listed more than ${TGT_SHOW_TARGETS_MAX} targets`);
      t = {
        tid: Number(m[1]),
        name: m[2]!,
        sessions: [],
        luns: [],
        accounts: [],
        outgoingAccounts: [],
        acls: [],
      };
      targets.push(t);
      section = '';
      continue;
    }
    if (!t) throw new BadResponseError('tgtd\'s target list does not start with "Target N: NAME"');
    if (indent === 4) {
      section = body.replace(/:$/, '');
      session = undefined;
      lun = undefined;
      continue;
    }
    const kv = /^([^:]+):\s*(.*)$/.exec(body);
    switch (section) {
      case 'System information':
        if (indent === 8 && kv?.[1] === 'State') t.state = kv[2];
        break;
      case 'I_T nexus information':
        if (indent === 8 && kv?.[1] === 'I_T nexus') {
          session = { nexus: Number(kv[2]), initiator: '', addresses: [], connections: [] };
          push(t.sessions, session, 'sessions');
        } else if (session && kv?.[1] === 'Initiator') {
          session.initiator = kv[2]!.replace(/ alias: .*$/, '');
        } else if (session && kv?.[1] === 'Connection' && /^\d{1,10}$/.test(kv[2]!)) {
          push(session.connections, { cid: Number(kv[2]), address: '' }, 'connections');
        } else if (session && kv?.[1] === 'IP Address') {
          push(session.addresses, kv[2]!, 'connections');
          const c = session.connections.at(-1);
          if (c && c.address === '') c.address = kv[2]!;
        }
        break;
      case 'LUN information':
        if (indent === 8 && kv?.[1] === 'LUN') {
          lun = { lun: Number(kv[2]), type: '' };
          push(t.luns, lun, 'LUNs');
        } else if (lun && kv?.[1] === 'Type') lun.type = kv[2]!;
        else if (lun && kv?.[1] === 'Backing store type') lun.backingStoreType = kv[2]!;
        else if (lun && kv?.[1] === 'Backing store path' && kv[2] !== 'None') lun.backingStorePath = kv[2]!;
        break;
      case 'Account information':
        if (indent === 8) {
          const out = / \(outgoing\)$/.test(body);
          push(out ? t.outgoingAccounts : t.accounts, body.replace(/ \(outgoing\)$/, ''), 'accounts');
        }
        break;
      case 'ACL information':
        if (indent === 8) push(t.acls, body, 'ACLs');
        break;
      default:
        break; // sections this client does not use
    }
  }
  return targets;
}
