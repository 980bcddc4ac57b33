// Host heartbeats: the controller polls every host of the applied spec and marks one that misses several polls
// in a row unreachable. The state lives in the store (`hosts/<name>`), each change in the event log.
import { log } from '../shared/log.js';
import type { HostCapabilities } from '../shared/model.js';
import type { Spec } from '../spec/schema.js';
import type { AgentClient } from './agents.js';
import { httpAgents } from './hosts.js';
import type { Store } from './store/types.js';

/** A host's liveness as the heartbeat monitor sees it. */
export interface HostHealth {
  /** `unknown` until the first answer or until `missLimit` polls failed. */
  state: 'unknown' | 'up' | 'unreachable';
  /** When the agent last answered (ISO time). */
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

/** Store key of a host's health. */
export const hostKey = (host: string): string => `hosts/${host}`;

/** Polls `GET /v1/health` of every host of the applied spec; see `HostHealth`. */
export class Monitor {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly intervalMs: number;
  private readonly missLimit: number;

  constructor(
    private readonly store: Store,
    private readonly currentSpec: () => Promise<Spec | undefined>,
    private readonly opts: MonitorOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? HEARTBEAT_INTERVAL_MS;
    this.missLimit = opts.missLimit ?? HEARTBEAT_MISS_LIMIT;
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

  /** One polling round: every host of the applied spec, in parallel. */
  async tick(): Promise<void> {
    const spec = await this.currentSpec().catch(() => undefined);
    const names = new Set(spec?.hosts.map((h) => h.name) ?? []);
    for (const { key } of await this.store.list<HostHealth>('hosts/'))
      if (!names.has(key.slice('hosts/'.length))) await this.store.delete(key);
    if (!spec) return;
    const timeoutMs = Math.min(Math.max(this.intervalMs, HEALTH_TIMEOUT_MIN_MS), HEALTH_TIMEOUT_MAX_MS);
    await Promise.all(spec.hosts.map((h) => this.poll(spec, h.name, timeoutMs)));
  }

  private async poll(spec: Spec, host: string, timeoutMs: number): Promise<void> {
    const prev = await this.store.get<HostHealth>(hostKey(host));
    const now = new Date().toISOString();
    let client: Pick<AgentClient, 'health' | 'report'>;
    let error: string | undefined;
    try {
      client = (this.opts.client ?? httpAgents)(spec, host);
      await client.health(timeoutMs);
    } catch (e) {
      error = (e as Error).message;
    }
    if (error === undefined) {
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
    const next: HostHealth = {
      state,
      missed,
      since: state === prev?.state ? prev.since : now,
      error,
      ...(prev?.lastSeen ? { lastSeen: prev.lastSeen } : {}),
      ...(prev?.capabilities ? { capabilities: prev.capabilities } : {}),
    };
    if (down && prev?.state !== 'unreachable')
      await this.store.appendEvent(
        'host.unreachable',
        `${host} is unreachable: missed ${missed} heartbeats (last seen ${prev?.lastSeen ?? 'never'}): ${error}`,
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
