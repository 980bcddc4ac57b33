// The Store interface on etcd (issue 11, part 1): the cluster's controllers share their state through it. Keys live
// under `clusterKeys.kv`, values are JSON (zstd-compressed when large, value-codec.ts) bounded both ways, a key's version is its etcd mod
// revision, and the event log and audit trail are numbered by a counter advanced by compare-and-set, so appenders
// on two controllers never collide. Everything read from etcd is untrusted: sizes are checked before parsing.

import type { Etcd3, IKeyValue, IOperation, IRangeResponse } from 'etcd3';
import {
  type ClusterMembers,
  ClusterMembersSchema,
  clusterKeys,
  OWNER_PREFIX,
} from '../../shared/cluster.js';
import { InvalidRequestError, InvalidStateError } from '../../shared/errors.js';
import { etcdFailure } from '../../shared/etcd.js';
import { ETCD_RESPONSE_MAX_BYTES, ETCD_VALUE_MAX_BYTES } from '../../shared/limits.js';
import { KeyedQueue } from '../../shared/queue.js';
import { sleep } from '../../shared/time.js';
import type { Store, StoredAuditEntry, StoreEvent, Versioned } from './types.js';
import { decodeEtcdValue, encodeEtcdPlain, encodeEtcdValue } from './value-codec.js';

/** Digits of a log entry's sequence in its key (`events/0000000000000042`): keys sort as numbers do. */
export const SEQUENCE_DIGITS = 16;
/** Longest Store key (characters; up to 4 UTF-8 bytes each). */
export const STORE_KEY_MAX_CHARS = 4096;
/** Bytes one key with its value may take in a range response at most (longest key, framing), values of `valueMax`. */
const kvMaxBytes = (valueMax: number): number => valueMax + 4 * STORE_KEY_MAX_CHARS + 256;
const KV_MAX_BYTES = kvMaxBytes(ETCD_VALUE_MAX_BYTES);
/**
 * Most keys a range request asks for at once: a page of values at their limit (with the longest keys) still fits the
 * client's largest response, so no page is ever refused for its size (which would reset the shared connection).
 */
export const RANGE_PAGE_KEYS = Math.floor(ETCD_RESPONSE_MAX_BYTES / KV_MAX_BYTES);
/**
 * Bytes a range page aims at: the first page asks for as many keys as fit at the value limit, later ones for as
 * many as fit at the largest value seen so far (so a page of large values arrives well within a request's deadline,
 * and small values still come many at a time).
 */
export const RANGE_PAGE_TARGET_BYTES = 8 << 20;
/**
 * Prefixes whose values this store bounds below ETCD_VALUE_MAX_BYTES on every write, so that a range inside one reads
 * in pages of thousands of keys while still never over the client's largest response. Owner records (~200 bytes;
 * names are short) are listed whole by every apply and `vm list`: 20,000 of them were ~318 requests in a row at
 * RANGE_PAGE_KEYS a page, each able to miss etcd's deadline under load.
 */
export const SMALL_VALUE_PREFIXES: ReadonlyArray<{ prefix: string; valueMaxBytes: number }> = [
  { prefix: OWNER_PREFIX, valueMaxBytes: 4096 },
];

/** The bound on values stored under `key` (or on every key of a range starting with `key`). */
export function valueMaxBytes(key: string): number {
  return SMALL_VALUE_PREFIXES.find((p) => key.startsWith(p.prefix))?.valueMaxBytes ?? ETCD_VALUE_MAX_BYTES;
}

/**
 * Keys to ask for in the next page, given the largest key+value seen so far (0: none yet) and the bound on the
 * range's values (a page of values at that bound still fits the client's largest response).
 */
export function rangePageKeys(largestSeen: number, valueMax: number = ETCD_VALUE_MAX_BYTES): number {
  const kvMax = kvMaxBytes(Math.min(valueMax, ETCD_VALUE_MAX_BYTES));
  const per = largestSeen > 0 ? Math.max(largestSeen + 256, 4096) : kvMax;
  const fits = Math.floor(ETCD_RESPONSE_MAX_BYTES / kvMax);
  return Math.max(1, Math.min(fits, Math.floor(RANGE_PAGE_TARGET_BYTES / per)));
}
/** Audit entries read per step while filtering by time (newest first). */
const AUDIT_SCAN_KEYS = 256;
/** Compare-and-set tries of one append before giving up (each lost try means another appender won). */
export const APPEND_ATTEMPTS = 64;
/** Most waiting appends written in one transaction (etcd allows 128 operations in one by default). */
export const APPEND_BATCH_MAX = 48;
/** Most bytes of entries one append transaction carries (etcd takes requests of 1.5 MiB by default). */
const APPEND_BATCH_MAX_BYTES = 512 * 1024;

/** The key of entry `seq` of the log under `prefix`. */
export function sequenceKey(prefix: string, seq: number): string {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`log sequence out of range: ${seq}`);
  return `${prefix}${String(seq).padStart(SEQUENCE_DIGITS, '0')}`;
}

/** The sequence of a log entry's key under `prefix`, or undefined when it is not one. */
export function parseSequenceKey(prefix: string, key: string): number | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  if (!/^\d{16}$/.test(rest)) return undefined;
  const n = Number(rest);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** The counter key of the log under `prefix` (outside the entries' digit range). */
export const counterKey = (prefix: string): string => `${prefix}counter`;

/** A log's counter: the last sequence handed out and the first one still kept. */
export interface LogCounter {
  last: number;
  first: number;
}

/** Reads a counter's text; refuses anything but `{"last":N,"first":M}` with 1 <= first <= last + 1. */
export function parseCounter(text: string, key: string): LogCounter {
  let v: unknown;
  try {
    v = text.length <= 100 ? JSON.parse(text) : undefined;
  } catch {
    v = undefined;
  }
  const c = v as Partial<LogCounter> | undefined;
  if (
    !c ||
    typeof c !== 'object' ||
    !Number.isSafeInteger(c.last) ||
    !Number.isSafeInteger(c.first) ||
    (c.last as number) < 0 ||
    (c.first as number) < 1 ||
    (c.first as number) > (c.last as number) + 1
  )
    throw new InvalidStateError(`etcd key ${key} is not a log counter`, key);
  return { last: c.last as number, first: c.first as number };
}

/** The largest key below which `prefix`'s keys sort (etcd's prefix range end), as a string range end. */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i]! += 1;
      return end;
    }
  }
  return Buffer.from([0]); // every key (etcd's "\0" range end)
}

/** Options of `EtcdStore`. */
export interface EtcdStoreOptions {
  /** Whether `close()` closes the client too (default false: the caller owns it). */
  ownsClient?: boolean;
}

/** An append waiting for its log's next transaction. */
interface PendingAppend {
  text: string | Buffer;
  keep: number | undefined;
  resolve: (seq: number) => void;
  reject: (e: unknown) => void;
}

/** A log entry read back: its sequence and the JSON it holds. */
interface LogEntry {
  seq: number;
  value: unknown;
}

/** Store on etcd: the cluster's state, shared by every controller (see docs/ha.md). */
export class EtcdStore implements Store {
  private readonly ownsClient: boolean;
  /** The last counter this store wrote per log: one round trip per append while nobody else appends. */
  private readonly counters = new Map<string, { counter: LogCounter; rev: string | null }>();
  /** Appends of this store run one at a time per log: only other controllers' appends compete for the counter. */
  private readonly appends = new KeyedQueue();
  /** Appends waiting per log, written together by the next flush. */
  private readonly pending = new Map<string, PendingAppend[]>();
  private closed = false;

  constructor(
    /** The etcd client (from `etcdClient()`); share it with `EtcdCoordination`. */
    readonly client: Etcd3,
    opts: EtcdStoreOptions = {},
  ) {
    this.ownsClient = opts.ownsClient ?? false;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Keys.

  async get<T>(key: string): Promise<T | undefined> {
    return (await this.getVersioned<T>(key))?.value;
  }

  async getVersioned<T>(key: string): Promise<Versioned<T> | undefined> {
    const k = clusterKeys.kv(checkKey(key));
    const res = await this.call(`get ${key}`, () => this.client.get(k).exec());
    const kv = res.kvs[0];
    return kv ? { value: decodeEtcdValue(kv.value, key) as T, version: kv.mod_revision } : undefined;
  }

  async put(key: string, value: unknown): Promise<void> {
    const k = clusterKeys.kv(checkKey(key));
    const text = boundedValue(encodeEtcdValue(value, key), key);
    await this.call(`put ${key}`, () => this.client.put(k).value(text).exec());
  }

  async delete(key: string): Promise<void> {
    const k = clusterKeys.kv(checkKey(key));
    await this.call(`delete ${key}`, () => this.client.delete().key(k).exec());
  }

  async list<T>(prefix: string): Promise<Array<{ key: string; value: T }>> {
    return (await this.listVersioned<T>(prefix)).map(({ key, value }) => ({ key, value }));
  }

  async listVersioned<T>(prefix: string): Promise<Array<{ key: string } & Versioned<T>>> {
    const start = clusterKeys.kv(prefix);
    const kvs = await this.rangeAll(
      `list ${prefix || '(all)'}`,
      Buffer.from(start),
      prefixEnd(start),
      undefined,
      valueMaxBytes(prefix),
    );
    return kvs.map((kv) => {
      const key = kv.key.toString().slice(clusterKeys.kvPrefix.length);
      return { key, value: decodeEtcdValue(kv.value, key) as T, version: kv.mod_revision };
    });
  }

  async putIf(key: string, value: unknown, expected: string | null): Promise<string | undefined> {
    const k = clusterKeys.kv(checkKey(key));
    if (expected !== null) checkVersion(expected, key);
    const text = boundedValue(encodeEtcdValue(value, key), key);
    const res = await this.call(`put ${key} if unchanged`, () =>
      (expected === null ? this.client.if(k, 'Create', '==', 0) : this.client.if(k, 'Mod', '==', expected))
        .then(this.client.put(k).value(text))
        .commit(),
    );
    // The transaction's revision is the put's: the key's new mod revision.
    return res.succeeded ? res.header.revision : undefined;
  }

  async deleteIf(key: string, expected: string): Promise<boolean> {
    const k = clusterKeys.kv(checkKey(key));
    checkVersion(expected, key);
    const res = await this.call(`delete ${key} if unchanged`, () =>
      this.client.if(k, 'Mod', '==', expected).then(this.client.delete().key(k)).commit(),
    );
    return res.succeeded;
  }

  // -------------------------------------------------------------------------------------------------------------
  // The cluster's membership (outside the Store's keys; the agents read it for the outage check).

  /** Writes `clusterKeys.members` (the active controller, at apply). */
  /**
   * Writes the membership unless it is already exactly that (one transaction): every agent re-reads it when it
   * changes, so rewriting an unchanged one on each apply sent a whole fleet's agents to read it at once (1,000 hosts
   * x 52 KB), which starved etcd of its lease renewals in the 1,000-host simulation. Whether it was written.
   */
  async putClusterMembers(members: ClusterMembers): Promise<boolean> {
    const text = encodeEtcdPlain(ClusterMembersSchema.parse(members), clusterKeys.members);
    const k = clusterKeys.members;
    const res = await this.call('put the cluster members', () =>
      this.client.if(k, 'Value', '==', text).else(this.client.put(k).value(text)).commit(),
    );
    return !res.succeeded;
  }

  /** Reads `clusterKeys.members`; undefined when absent. A value that is not a membership is refused. */
  async getClusterMembers(): Promise<ClusterMembers | undefined> {
    const res = await this.call('get the cluster members', () => this.client.get(clusterKeys.members).exec());
    const kv = res.kvs[0];
    if (!kv) return undefined;
    const parsed = ClusterMembersSchema.safeParse(decodeEtcdValue(kv.value, clusterKeys.members));
    if (!parsed.success)
      throw new InvalidStateError(
        `etcd key ${clusterKeys.members} is not a cluster membership: ${parsed.error.issues[0]?.message}`,
        clusterKeys.members,
      );
    return parsed.data;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Events and audit.

  async appendEvent(kind: string, message: string): Promise<StoreEvent> {
    const time = new Date().toISOString();
    const seq = await this.append(clusterKeys.eventsPrefix, { time, kind, message }, undefined);
    return { id: seq, time, kind, message };
  }

  async events(limit: number): Promise<StoreEvent[]> {
    const entries = await this.newest(clusterKeys.eventsPrefix, limit);
    return entries.map(({ seq, value }) => {
      const v = value as Partial<StoreEvent> | null;
      if (!v || typeof v.time !== 'string' || typeof v.kind !== 'string' || typeof v.message !== 'string')
        throw new InvalidStateError(
          `etcd key ${sequenceKey(clusterKeys.eventsPrefix, seq)} is not an event`,
          'events',
        );
      return { id: seq, time: v.time, kind: v.kind, message: v.message };
    });
  }

  async appendAudit(time: string, record: unknown, keep: number): Promise<void> {
    if (!Number.isSafeInteger(keep) || keep < 1)
      throw new InvalidRequestError(`audit: keep must be a positive count, got ${keep}`);
    await this.append(clusterKeys.auditPrefix, { time, record }, keep);
  }

  async auditEntries(since: string | undefined, limit: number): Promise<StoredAuditEntry[]> {
    if (limit <= 0) return [];
    const prefix = clusterKeys.auditPrefix;
    const { counter, revision } = await this.readCounter(prefix);
    const out: StoredAuditEntry[] = [];
    // Newest first, a page at a time, until `limit` match (times are the appenders' and need not grow with ids).
    let hi = counter.last;
    while (hi >= counter.first && out.length < limit) {
      const lo = Math.max(counter.first, hi - AUDIT_SCAN_KEYS + 1);
      const page = await this.readEntries(prefix, lo, hi, revision);
      // Entries first..last all exist; none here means the counter lies (planted): stop rather than walk it.
      if (page.length === 0) break;
      for (let i = page.length - 1; i >= 0 && out.length < limit; i--) {
        const { seq, value } = page[i]!;
        const v = value as { time?: unknown; record?: unknown } | null;
        if (!v || typeof v.time !== 'string' || !('record' in v))
          throw new InvalidStateError(`etcd key ${sequenceKey(prefix, seq)} is not an audit entry`, 'audit');
        if (since === undefined || v.time >= since) out.push({ id: seq, time: v.time, record: v.record });
      }
      hi = lo - 1;
    }
    return out.reverse();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsClient) this.client.close();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Internals.

  /** Runs an etcd request, turning its failures into vmlink errors (unavailable). */
  private async call<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      throw etcdFailure(e, what);
    }
  }

  /** The log's counter (absent: empty log) and the revision it was read at. */
  private async readCounter(
    prefix: string,
  ): Promise<{ counter: LogCounter; rev: string | null; revision: string }> {
    const key = counterKey(prefix);
    const res = await this.call(`read ${key}`, () => this.client.get(key).exec());
    const kv = res.kvs[0];
    return kv
      ? {
          counter: parseCounter(kv.value.toString(), key),
          rev: kv.mod_revision,
          revision: res.header.revision,
        }
      : { counter: { last: 0, first: 1 }, rev: null, revision: res.header.revision };
  }

  /**
   * Appends `value` to the log under `prefix` as entry last + 1, in one transaction with the counter's advance
   * (compare-and-set on the counter's mod revision), pruning entries `keep` or more below the new one when given.
   * Returns the entry's sequence. Appends waiting behind a running one go together in the next transaction (a group
   * commit): an apply placing 20,000 VMs logs 20,000 events, which one round trip each made minutes.
   */
  private append(prefix: string, value: unknown, keep: number | undefined): Promise<number> {
    const text = encodeEtcdValue(value, prefix);
    return new Promise<number>((resolve, reject) => {
      const queue = this.pending.get(prefix) ?? [];
      queue.push({ text, keep, resolve, reject });
      this.pending.set(prefix, queue);
      void this.appends.run(prefix, () => this.flush(prefix));
    });
  }

  /** Writes the appends waiting for `prefix` (a batch of them; a flush that finds none does nothing). */
  private async flush(prefix: string): Promise<void> {
    const queue = this.pending.get(prefix);
    if (!queue?.length) return;
    const batch = [queue.shift()!];
    let bytes = batch[0]!.text.length;
    while (
      queue.length &&
      batch.length < APPEND_BATCH_MAX &&
      queue[0]!.keep === batch[0]!.keep &&
      bytes + queue[0]!.text.length <= APPEND_BATCH_MAX_BYTES
    ) {
      bytes += queue[0]!.text.length;
      batch.push(queue.shift()!);
    }
    if (!queue.length) this.pending.delete(prefix);
    try {
      const first = await this.appendNow(
        prefix,
        batch.map((b) => b.text),
        batch[0]!.keep,
      );
      for (const [i, b] of batch.entries()) b.resolve(first + i);
    } catch (e) {
      for (const b of batch) b.reject(e);
    }
  }

  /** Appends `texts` as the next entries of the log under `prefix` in one transaction; returns the first's sequence. */
  private async appendNow(
    prefix: string,
    texts: ReadonlyArray<string | Buffer>,
    keep: number | undefined,
  ): Promise<number> {
    const cKey = counterKey(prefix);
    let state = this.counters.get(prefix) ?? (await this.readCounter(prefix));
    for (let attempt = 0; attempt < APPEND_ATTEMPTS; attempt++) {
      const seq = state.counter.last + 1;
      const last = seq + texts.length - 1;
      const entries = texts.map((_, i) => sequenceKey(prefix, seq + i));
      // Entries below `first` are gone; everything `keep` or more below the newest goes now.
      const first = keep === undefined ? state.counter.first : Math.max(state.counter.first, last - keep + 1);
      const next: LogCounter = { last, first };
      const ops: IOperation[] = [
        this.client.put(cKey).value(JSON.stringify(next)),
        // An entry already gone to the pruning is not written (a batch larger than `keep`).
        ...texts.flatMap((t, i) => (seq + i >= first ? [this.client.put(entries[i]!).value(t)] : [])),
      ];
      if (first > state.counter.first)
        ops.push(
          this.client.delete().inRange({
            start: sequenceKey(prefix, state.counter.first),
            end: sequenceKey(prefix, Math.min(first, seq)),
          }),
        );
      let cmp =
        state.rev === null
          ? this.client.if(cKey, 'Create', '==', 0)
          : this.client.if(cKey, 'Mod', '==', state.rev);
      for (const e of entries) cmp = cmp.and(e, 'Create', '==', 0);
      const res = await this.call(`append to ${prefix}`, () =>
        cmp
          .then(...ops)
          .else(this.client.get(cKey))
          .commit(),
      );
      if (res.succeeded) {
        // The transaction's revision is the counter's new mod revision.
        this.counters.set(prefix, { counter: next, rev: res.header.revision });
        return seq;
      }
      // Another appender won (or our cached counter was stale): start from the counter as etcd has it now.
      const kv = res.responses[0]?.response_range?.kvs[0];
      state = kv
        ? { counter: parseCounter(kv.value.toString(), cKey), rev: kv.mod_revision }
        : { counter: { last: 0, first: 1 }, rev: null };
      if (attempt >= 2) await sleep(Math.floor(Math.random() * 5 * Math.min(attempt, 10)));
    }
    this.counters.delete(prefix);
    throw etcdFailure(
      new Error(`gave up after ${APPEND_ATTEMPTS} tries: other appenders kept winning`),
      `append to ${prefix}`,
    );
  }

  /** The newest `limit` entries of the log under `prefix`, oldest first. */
  private async newest(prefix: string, limit: number): Promise<LogEntry[]> {
    if (limit <= 0) return [];
    const { counter, revision } = await this.readCounter(prefix);
    if (counter.last < counter.first) return [];
    const lo = Math.max(counter.first, counter.last - Math.min(limit, counter.last) + 1);
    return this.readEntries(prefix, lo, counter.last, revision);
  }

  /** Entries lo..hi (inclusive) of the log under `prefix` at `revision`, in order. */
  private async readEntries(prefix: string, lo: number, hi: number, revision: string): Promise<LogEntry[]> {
    const kvs = await this.rangeAll(
      `read ${prefix}`,
      Buffer.from(sequenceKey(prefix, lo)),
      Buffer.from(sequenceKey(prefix, hi + 1)),
      revision,
    );
    const out: LogEntry[] = [];
    for (const kv of kvs) {
      const key = kv.key.toString();
      const seq = parseSequenceKey(prefix, key);
      if (seq === undefined) continue; // not an entry (cannot be in this range, but never trust it)
      out.push({ seq, value: decodeEtcdValue(kv.value, key) });
    }
    return out;
  }

  /**
   * Every key in [start, end) in key order, at one revision (`revision`, else the first page's), a page at a time
   * (see `rangePageKeys`).
   */
  private async rangeAll(
    what: string,
    start: Buffer,
    end: Buffer,
    revision?: string,
    valueMax: number = ETCD_VALUE_MAX_BYTES,
  ): Promise<IKeyValue[]> {
    const out: IKeyValue[] = [];
    let from = start;
    let rev = revision;
    let largest = 0;
    for (;;) {
      const b = this.client.getAll().inRange({ start: from, end }).limit(rangePageKeys(largest, valueMax));
      if (rev !== undefined) b.revision(rev);
      const res: IRangeResponse = await this.call(what, () => b.exec());
      rev ??= res.header.revision;
      for (const kv of res.kvs) {
        // A value over its prefix's bound (written around this store) could make a later page too large to receive.
        if (kv.value.length > valueMax)
          throw new InvalidStateError(
            `etcd key ${kv.key.toString().slice(0, 200)} holds ${kv.value.length} bytes, over the ${valueMax} its prefix allows`,
            kv.key.toString(),
          );
        largest = Math.max(largest, kv.key.length + kv.value.length);
      }
      out.push(...res.kvs);
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || !last) return out;
      from = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }
}

/** Whether `s` is the etcd store (for etcd-only extras: the cluster members key, the shared client). */
export function isEtcdStore(s: unknown): s is EtcdStore {
  return s instanceof EtcdStore;
}

/** A Store key must be text etcd can hold under our prefix. */
function checkKey(key: string): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > STORE_KEY_MAX_CHARS)
    throw new InvalidRequestError(
      `store key must be 1-${STORE_KEY_MAX_CHARS} characters, got ${JSON.stringify(key).slice(0, 80)}`,
    );
  return key;
}

/** A value as stored, refused when over its prefix's bound (SMALL_VALUE_PREFIXES). */
function boundedValue(text: string | Buffer, key: string): string | Buffer {
  const max = valueMaxBytes(key);
  const bytes = typeof text === 'string' ? Buffer.byteLength(text) : text.length;
  if (bytes > max)
    throw new InvalidRequestError(
      `store value of ${key} is ${bytes} bytes; values under its prefix are at most ${max}`,
      key,
    );
  return text;
}

/** A version we compare against must be an etcd revision. */
function checkVersion(v: string, key: string): void {
  if (!/^[1-9]\d{0,19}$/.test(v))
    throw new InvalidRequestError(
      `store version of ${key} must be a revision (digits), got ${v.slice(0, 40)}`,
      key,
    );
}
