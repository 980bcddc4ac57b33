// The controller's cache of each host's last report and guest addresses (issue 13: `status` and `vm list` at 1,000
// hosts answer from here instead of asking every agent each time). In memory, per controller: each entry is what the
// host answered and when. An entry is marked stale by every agent call the controller makes on that host other than
// a read (one hook on the agent factory, `withReportCache`), so that a read after an action asks that host again.
import type { HostReport } from '../shared/model.js';
import type { AgentFactory, AgentPort } from './hosts.js';

/** A guest's addresses by lower-case MAC; undefined where its guest agent gave none (not yet up, none installed). */
export type GuestAddresses = Map<string, Map<string, string[]> | undefined>;

/** A cached value and how old it is. */
export interface Cached<T> {
  value: T;
  ageMs: number;
}

interface Entry {
  /** Bumped by every stale mark: a value fetched under an older generation is never served. */
  gen: number;
  report?: { value: HostReport; at: number; gen: number };
  guests?: { value: GuestAddresses; at: number; gen: number };
  /** Since when every guest answer of this host has lacked some running VM's guest agent. */
  guestsIncompleteSince?: number;
}

/** Options of the cache (tests: a fake clock). */
export interface ReportCacheOptions {
  now?: () => number;
  /** Oldest entry served (a refresher that stopped must not leave old answers served as current). */
  maxAgeMs?: number;
  /**
   * How long guests whose guest agent does not answer make `vm list` ask that host again on each read: a guest that
   * is booting answers soon; one that has no guest agent never will, and is then served from here.
   */
  guestPatienceMs?: number;
}

/** Default oldest entry served. */
export const REPORT_CACHE_MAX_AGE_MS = 120_000;
/** Default patience with guests that do not answer (see `ReportCacheOptions.guestPatienceMs`). */
export const GUEST_PATIENCE_MS = 60_000;

/** Each host's last report and guest addresses, with their ages; see the file's comment. */
export class ReportCache {
  private readonly hosts = new Map<string, Entry>();
  private readonly now: () => number;
  private maxAgeMs: number;
  private readonly guestPatienceMs: number;
  /** Whether reads may be served from here: while a refresher keeps it current (the active controller). */
  serving = false;

  constructor(opts: ReportCacheOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.maxAgeMs = opts.maxAgeMs ?? REPORT_CACHE_MAX_AGE_MS;
    this.guestPatienceMs = opts.guestPatienceMs ?? GUEST_PATIENCE_MS;
  }

  /** Sets the oldest entry served (the refresher ties it to its period). */
  setMaxAge(ms: number): void {
    this.maxAgeMs = ms;
  }

  private entry(host: string): Entry {
    let e = this.hosts.get(host);
    if (!e) {
      e = { gen: 0 };
      this.hosts.set(host, e);
    }
    return e;
  }

  /** The generation a fetch starting now belongs to (pass it to `putReport`/`putGuests`). */
  generation(host: string): number {
    return this.entry(host).gen;
  }

  /** Nothing cached for `host` is served any more: the next read asks its agent. */
  markStale(host: string): void {
    this.entry(host).gen++;
  }

  /** Keeps a report fetched under generation `gen` (dropped when the host was marked stale since). */
  putReport(host: string, report: HostReport, gen: number): void {
    const e = this.entry(host);
    if (gen === e.gen) e.report = { value: report, at: this.now(), gen };
  }

  /** Keeps guest addresses fetched under generation `gen`; `complete` when every running VM's guest answered. */
  putGuests(host: string, guests: GuestAddresses, gen: number): void {
    const e = this.entry(host);
    if (gen !== e.gen) return;
    const complete = [...guests.values()].every((g) => g !== undefined);
    e.guestsIncompleteSince = complete ? undefined : (e.guestsIncompleteSince ?? this.now());
    e.guests = { value: guests, at: this.now(), gen };
  }

  /** `host`'s last report, if one is current (not marked stale since, younger than the maximum age). */
  report(host: string): Cached<HostReport> | undefined {
    const e = this.hosts.get(host);
    return e?.report ? this.current(e, e.report) : undefined;
  }

  /**
   * `host`'s guest addresses, if current; while some guest has not answered for less than the patience, none (the
   * caller asks again).
   */
  guests(host: string): Cached<GuestAddresses> | undefined {
    const e = this.hosts.get(host);
    if (!e?.guests) return undefined;
    const since = e.guestsIncompleteSince;
    if (since !== undefined && this.now() - since < this.guestPatienceMs) return undefined;
    return this.current(e, e.guests);
  }

  private current<T>(e: Entry, v: { value: T; at: number; gen: number }): Cached<T> | undefined {
    // At least 1 ms: an age of 0 means "asked for this answer" (HostStatus.reportAgeMs).
    const ageMs = Math.max(1, this.now() - v.at);
    return v.gen === e.gen && ageMs <= this.maxAgeMs ? { value: v.value, ageMs } : undefined;
  }

  /** Forgets every host not in `names` (they left the spec). */
  keepOnly(names: ReadonlySet<string>): void {
    for (const h of this.hosts.keys()) if (!names.has(h)) this.hosts.delete(h);
  }
}

/**
 * Agent calls that only read: they leave a host's cached report alone. Every other call (actions, VM power,
 * migrations, backups, guest commands, certificate changes, and any method added later) marks it stale.
 */
const READS: ReadonlySet<string> = new Set([
  'health',
  'report',
  'guestList',
  'interfaces',
  'metrics',
  'doctor',
  'doctorObserved',
  'openDisks',
  'console',
  'flows',
  'devices',
  'vmSnapshots',
  'confirmState',
  'probe',
  'probeBatch',
  'migrationJob',
  'migrationDirtyRate',
  'backupStores',
  'snapshots',
  'manifest',
  'job',
]);

/**
 * The hook: every report the controller fetches from a host (plan, apply, `status --live`, the refresher) is kept in
 * `cache`, and every other call but a read marks the host stale, before it leaves and again once it settled (a
 * refresh that ran during the call may have seen the change half done).
 */
export function withReportCache(agents: AgentFactory, cache: ReportCache): AgentFactory {
  return (spec, host) => {
    const agent = agents(spec, host);
    return new Proxy(agent, {
      get(target, prop, receiver) {
        const v: unknown = Reflect.get(target, prop, receiver);
        if (typeof v !== 'function' || typeof prop !== 'string') return v;
        const fn = v as (...a: unknown[]) => unknown;
        if (prop === 'report')
          return async (...a: unknown[]) => {
            const gen = cache.generation(host);
            try {
              const r = (await fn.apply(target, a)) as HostReport;
              cache.putReport(host, r, gen);
              return r;
            } catch (e) {
              cache.markStale(host); // an agent that did not answer is asked again, not served from memory
              throw e;
            }
          };
        if (READS.has(prop)) return fn.bind(target);
        return (...a: unknown[]) => {
          cache.markStale(host);
          const settled = () => cache.markStale(host);
          const out = fn.apply(target, a);
          if (out instanceof Promise) return out.finally(settled);
          settled();
          return out;
        };
      },
    }) as AgentPort;
  };
}
