// Host heartbeats: the controller polls every host of the applied spec and marks one that misses several polls
// in a row unreachable. The state lives in the store (`hosts/<name>`), each change in the event log. A round reads
// every record in one list and writes a host's record only when it changed (or its `lastSeen` is older than
// LAST_SEEN_REFRESH_MS): at 1,000 hosts a get and a put per host per round were most of etcd's slow requests.
import { log } from '../shared/log.js';
import type { HostCapabilities } from '../shared/model.js';
import { settleLimited } from '../shared/queue.js';
import type { Spec } from '../spec/schema.js';
import type { AgentClient } from './agents.js';
import { httpAgents } from './hosts.js';
import type { Store } from './store/types.js';

/** A host's liveness as the heartbeat monitor sees it. */
export interface HostHealth {
  /** `unknown` until the first answer or until `missLimit` polls failed. */
  state: 'unknown' | 'up' | 'unreachable';
  /**
   * When the agent last answered (ISO time). While the host stays up this is refreshed in the store every
   * LAST_SEEN_REFRESH_MS only (it may be that much behind); the record written at the first missed poll has the
   * exact time of the last answer.
   */
  lastSeen?: string;
  /** Polls missed in a row. */
  missed: number;
  /** When `state` last changed (ISO time). */
  since: string;
  /** Why the last poll failed. */
  error?: string;
  /** From the agent's report, refreshed each time the host comes up. */
  capabilities?: HostCapabilities;
}

/** Options of the monitor. */
export interface MonitorOptions {
  /** Poll period (default 5 s). */
  intervalMs?: number;
  /** Missed polls in a row that make a host unreachable (default 3). */
  missLimit?: number;
  /** Client factory (tests). */
  client?: (spec: Spec, host: string) => Pick<AgentClient, 'health' | 'report'>;
  /** Wall clock in ms (tests). */
  now?: () => number;
}

/** Default heartbeat period. */
export const HEARTBEAT_INTERVAL_MS = 5_000;
/** Default number of missed heartbeats in a row that make a host unreachable. */
export const HEARTBEAT_MISS_LIMIT = 3;
// One heartbeat waits at least this long for an answer, and at most this long (or one period, if shorter)...
const HEALTH_TIMEOUT_MIN_MS = 1_000;
const HEALTH_TIMEOUT_MAX_MS = 5_000;
// ...and the report fetched when a host comes up (for its capabilities) may take longer.
const UP_REPORT_TIMEOUT_MS = 30_000;
/** Hosts polled at once in a round (each poll may read and write its record in the store). */
export const HEARTBEAT_CONCURRENCY = 32;
/**
 * A host that stays up has its record (`lastSeen`) rewritten at most this often (or every round, when rounds are
 * slower): with 1,000 hosts and 5 s rounds, a write per host per round was 200 etcd writes a second. Kept short, as
 * `lastSeen` is what `status`, the doctor and `vmlink_host_heartbeat_age_seconds` show: a host that answers is never
 * shown more than this (plus a round) behind, so an alert on that age at 30 s or more never fires for a live host.
 */
export const LAST_SEEN_REFRESH_MS = 15_000;

/** Store key of a host's health. */
export const hostKey = (host: string): string => `hosts/${host}`;

/** Polls `GET /v1/health` of every host of the applied spec; see `HostHealth`. */
export class Monitor {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly intervalMs: number;
  private readonly missLimit: number;
  private readonly now: () => number;
  /** The exact time of each host's last answer (the store's may lag by LAST_SEEN_REFRESH_MS). */
  private readonly answered = new Map<string, string>();

  constructor(
    private readonly store: Store,
    private readonly currentSpec: () => Promise<Spec | undefined>,
    private readonly opts: MonitorOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? HEARTBEAT_INTERVAL_MS;
    this.missLimit = opts.missLimit ?? HEARTBEAT_MISS_LIMIT;
    this.now = opts.now ?? Date.now;
  }

  /** Starts polling (first poll at once). */
  start(): void {
    this.running = true;
    const loop = async () => {
      await this.tick().catch((e: unknown) =>
        log.warn({ err: (e as Error).message }, 'heartbeat round failed'),
      );
      if (this.running) this.timer = setTimeout(() => void loop(), this.intervalMs);
    };
    void loop();
  }

  /** Stops polling. */
  stop(): void {
    this.running = false;
    clearTimeout(this.timer);
  }

  /** One polling round: every host of the applied spec, HEARTBEAT_CONCURRENCY at once. */
  async tick(): Promise<void> {
    const spec = await this.currentSpec().catch(() => undefined);
    const names = new Set(spec?.hosts.map((h) => h.name) ?? []);
    const stored = new Map<string, HostHealth>();
    for (const { key, value } of await this.store.list<HostHealth>('hosts/')) {
      const host = key.slice('hosts/'.length);
      if (names.has(host)) stored.set(host, value);
      else {
        await this.store.delete(key);
        this.answered.delete(host);
      }
    }
    if (!spec) return;
    const timeoutMs = Math.min(Math.max(this.intervalMs, HEALTH_TIMEOUT_MIN_MS), HEALTH_TIMEOUT_MAX_MS);
    // Settled one by one: a store error on one host's record must not stop the round for the others.
    const results = await settleLimited(spec.hosts, HEARTBEAT_CONCURRENCY, (h) =>
      this.poll(spec, h.name, stored.get(h.name), timeoutMs),
    );
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length > 0)
      throw new Error(
        `${failed.length} of ${spec.hosts.length} heartbeat records not written: ${(failed[0]!.reason as Error).message}`,
      );
  }

  private async poll(
    spec: Spec,
    host: string,
    prev: HostHealth | undefined,
    timeoutMs: number,
  ): Promise<void> {
    const now = new Date(this.now()).toISOString();
    let client: Pick<AgentClient, 'health' | 'report'>;
    let error: string | undefined;
    try {
      client = (this.opts.client ?? httpAgents)(spec, host);
      await client.health(timeoutMs);
    } catch (e) {
      error = (e as Error).message;
    }
    if (error === undefined) {
      this.answered.set(host, now);
      const refresh = Math.max(LAST_SEEN_REFRESH_MS, this.intervalMs);
      const seenAt = prev?.lastSeen ? Date.parse(prev.lastSeen) : Number.NaN;
      // Up before and after, nothing missed, and the stored lastSeen recent enough: nothing to write.
      if (
        prev?.state === 'up' &&
        prev.missed === 0 &&
        prev.error === undefined &&
        Number.isFinite(seenAt) &&
        this.now() - seenAt < refresh
      )
        return;
      const next: HostHealth = {
        state: 'up',
        lastSeen: now,
        missed: 0,
        since: prev?.state === 'up' ? prev.since : now,
        ...(prev?.capabilities ? { capabilities: prev.capabilities } : {}),
      };
      if (prev?.state !== 'up') {
        const caps = await client!
          .report(UP_REPORT_TIMEOUT_MS)
          .then((r) => r.capabilities)
          .catch(() => undefined);
        if (caps) next.capabilities = caps;
        await this.store.appendEvent(
          'host.up',
          prev?.state === 'unreachable'
            ? `${host} is up again (unreachable since ${prev.since})`
            : `${host} is up`,
        );
      }
      await this.store.put(hostKey(host), next);
      return;
    }
    const missed = (prev?.missed ?? 0) + 1;
    const down = missed >= this.missLimit;
    const state = down ? 'unreachable' : (prev?.state ?? 'unknown');
    // The exact last answer when this controller saw it (the stored one may lag by LAST_SEEN_REFRESH_MS).
    const lastSeen = this.answered.get(host) ?? prev?.lastSeen;
    const next: HostHealth = {
      state,
      missed,
      since: state === prev?.state ? prev.since : now,
      error,
      ...(lastSeen ? { lastSeen } : {}),
      ...(prev?.capabilities ? { capabilities: prev.capabilities } : {}),
    };
    if (down && prev?.state !== 'unreachable')
      await this.store.appendEvent(
        'host.unreachable',
        `${host} is unreachable: missed ${missed} heartbeats (last seen ${lastSeen ?? 'never'}): ${error}`,
      );
    await this.store.put(hostKey(host), next);
  }
}

/** Health of every host the monitor tracks, by name. */
export async function hostHealth(store: Store): Promise<Record<string, HostHealth>> {
  return Object.fromEntries(
    (await store.list<HostHealth>('hosts/')).map((e) => [e.key.slice('hosts/'.length), e.value]),
  );
}
