// The host's lease and its watchdog: a state machine over injected etcd operations and an injected clock, so that
// every sequence (renewals lost and recovered, the fence deadline, the outage hold, a new lease after a fence) is
// tested deterministically. The timing is docs/ha.md's "Timing" and "Self-fencing":
//
// - renew every heartbeat; after a failure retry every LEASE_RETRY_MS (etcd3's autoKeepAlive is not used: its
//   timing is not ours to see);
// - the fence deadline = the send time of the last renewal etcd confirmed + TTL - FENCE_MARGIN_MS: etcd started that
//   renewal's TTL no earlier than it was sent, so the agent fences before etcd can expire the lease;
// - at the deadline: `hold` when the peers prove the outage is etcd-wide (peers.ts), else fence;
// - a keepalive answered with TTL <= 0 means the lease is gone: fence at once;
// - `fenced`: grant a NEW lease (never the old one), write the fence report and the liveness key, then `held`.
import {
  type EtcdViews,
  FENCE_MARGIN_MS,
  type FenceReport,
  HOLD_PEER_CHECK_MS,
  type HostLeaseValue,
  LEASE_RETRY_MS,
  type LeaseMode,
  type LeaseStatus,
  leaseTtlSeconds,
} from '../../shared/cluster.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { PEER_LEASE_TIMEOUT_MS } from '../../shared/limits.js';
import { log as rootLog } from '../../shared/log.js';
import type { FenceVms } from './types.js';

/**
 * The shortest heartbeat that leaves room between a renewal (every heartbeat) and the fence deadline (TTL = two
 * heartbeats, minus FENCE_MARGIN_MS, minus the peers' check before it): 2h - 2 s > h + 0.8 s.
 */
export const CLUSTER_HEARTBEAT_S_MIN = 3;

/** How etcd looks from here. */
export type EtcdView = (typeof EtcdViews)[number];

/** Time as the keeper sees it: a clock that never goes back (milliseconds, epoch-based) and timers on it. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/**
 * The process's clock: `performance.timeOrigin + performance.now()` is epoch-based like Date.now() but never jumps
 * with the wall clock (an NTP step must not move a fence deadline); Node's timers run on the same monotonic time.
 */
export const systemClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** The etcd operations the keeper needs (membership.ts implements them on etcd3; tests fake them). */
export interface LeaseOps {
  /** Grants a new lease of `ttlSeconds`; resolves its id (decimal). */
  grant(ttlSeconds: number): Promise<string>;
  /** Renews lease `id` once; resolves the TTL etcd answered (<= 0: the lease is gone). */
  keepAlive(id: string): Promise<number>;
  /** Writes the host's liveness key attached to lease `id`. */
  putLiveness(id: string, value: HostLeaseValue): Promise<void>;
  /** Writes the host's fence report. */
  putFenceReport(report: FenceReport): Promise<void>;
  /** Revokes lease `id` (its keys go at once). */
  revoke(id: string): Promise<void>;
  /** How etcd looks: answering with a leader, without one, or not at all. */
  view(): Promise<EtcdView>;
}

/** What the outage check found (peers.ts). */
export interface HoldVerdict {
  /** Every peer answered and none holds its lease: the outage is etcd's, not this host's network. */
  proven: boolean;
  /** In words, for logs and the fence reason. */
  reason: string;
  /** A peer that answered that it holds its lease (etcd is back for it). */
  heldPeer?: string;
}

/** Options of a `LeaseKeeper`. */
export interface LeaseKeeperOptions {
  host: string;
  heartbeatSeconds: number;
  ops: LeaseOps;
  /** Stops every VM of this host at once; resolves their names. */
  fenceVms: FenceVms;
  /** The outage check: may this agent keep its VMs while it cannot renew? */
  checkPeers: () => Promise<HoldVerdict>;
  clock?: Clock;
  /** Called after each confirmed renewal or grant (membership.ts refreshes its cached membership then). */
  onHeld?: () => void;
  log?: Pick<typeof rootLog, 'info' | 'warn' | 'error'>;
}

/** The lease state machine. One per agent process. */
export class LeaseKeeper {
  private readonly clock: Clock;
  private readonly log: Pick<typeof rootLog, 'info' | 'warn' | 'error'>;
  private readonly ttlMs: number;
  private mode: LeaseMode = 'renewing';
  private etcd: EtcdView = 'unreachable';
  private leaseId: string | undefined;
  /** Send time of the last renewal (or grant) etcd confirmed. */
  private lastRenewal: number | undefined;
  private fencedAt: number | undefined;
  private fencedVms: string[] = [];
  /** The fence report not yet written. */
  private pendingReport: FenceReport | undefined;
  /** Bumped whenever the lease in hand changes (fence, stop): late answers of older attempts are ignored. */
  private epoch = 0;
  private stopped = false;
  /** The renewal or grant in flight, with the epoch it belongs to. */
  private current: { epoch: number; p: Promise<boolean> } | undefined;
  /** VMs are being stopped: no lease is sought until they are. */
  private fencing = false;
  private readonly timers = new Map<'renew' | 'precheck' | 'deadline' | 'hold', unknown>();
  /** The outage check started just before the deadline, and its verdict once it came. */
  private precheck: { epoch: number; verdict?: HoldVerdict } | undefined;
  private viewing = false;

  constructor(private readonly opts: LeaseKeeperOptions) {
    this.clock = opts.clock ?? systemClock;
    this.log = opts.log ?? rootLog;
    this.ttlMs = leaseTtlSeconds(opts.heartbeatSeconds) * 1000;
    if (opts.heartbeatSeconds < CLUSTER_HEARTBEAT_S_MIN)
      throw new InvalidRequestError(
        `a cluster heartbeat of ${opts.heartbeatSeconds} s leaves no time between a renewal and the fence deadline (TTL - ${FENCE_MARGIN_MS / 1000} s); use ${CLUSTER_HEARTBEAT_S_MIN} s or more`,
      );
  }

  /** The fence deadline of the lease in hand (undefined without one). */
  get deadline(): number | undefined {
    return this.lastRenewal === undefined ? undefined : this.lastRenewal + this.ttlMs - FENCE_MARGIN_MS;
  }

  /**
   * Grants the first lease. Resolves `held` once it is; when etcd cannot grant one, the agent cannot know whether an
   * earlier lease of this host is about to end, so it decides at once as at a deadline (hold when the peers prove an
   * etcd-wide outage, else fence) and keeps trying in the background.
   */
  async start(): Promise<void> {
    this.stopped = false;
    try {
      await this.acquire();
    } catch (e) {
      this.log.warn({ err: msg(e) }, 'cluster: cannot get a lease at start');
      this.mode = 'renewing';
      this.refreshView();
      await this.decide(`no lease at start (${msg(e)})`, await this.safeCheck());
    }
  }

  /** Stops renewing and revokes the lease in hand (a clean stop: the host is failed at once, its VMs keep running). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.epoch++;
    for (const t of this.timers.values()) this.clock.clearTimeout(t);
    this.timers.clear();
    const id = this.leaseId;
    this.leaseId = undefined;
    if (id !== undefined && this.mode !== 'fenced')
      await this.opts.ops
        .revoke(id)
        .catch((e) => this.log.warn({ err: msg(e) }, 'cluster: lease revoke failed'));
  }

  /** The lease as this agent sees it now. */
  status(): LeaseStatus {
    const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
    const out: LeaseStatus = {
      host: this.opts.host,
      mode: this.mode,
      etcd: this.etcd,
      fencedVms: [...this.fencedVms],
      heartbeatSeconds: this.opts.heartbeatSeconds,
    };
    if (this.leaseId !== undefined) out.leaseId = this.leaseId;
    const last = iso(this.lastRenewal);
    if (last) out.lastRenewal = last;
    const deadline = iso(this.deadline);
    if (deadline && (this.mode === 'renewing' || this.mode === 'held')) out.deadline = deadline;
    const fencedAt = iso(this.fencedAt);
    if (fencedAt) out.fencedAt = fencedAt;
    return out;
  }

  /**
   * The status after making sure: in `held`, unless a renewal was confirmed in the last `boundMs`, renews now and
   * waits up to `boundMs` for it. A peer's outage check asks this way: a host that has not yet tried etcd since it
   * went down would otherwise answer `held` and fence the asker. A renewal still pending after `boundMs` leaves
   * `held` (the asker then fences: when in doubt, the answer that keeps VMs single).
   */
  async verifiedStatus(boundMs: number): Promise<LeaseStatus> {
    if (this.mode === 'held' && !this.stopped && this.clock.now() - (this.lastRenewal ?? 0) > boundMs) {
      let timer: unknown;
      await Promise.race([
        this.attempt(),
        new Promise((r) => {
          timer = this.clock.setTimeout(() => r(undefined), boundMs);
        }),
      ]);
      this.clock.clearTimeout(timer);
    }
    return this.status();
  }

  /** Whether the lease is held now (VMs may start with a current token). */
  get held(): boolean {
    // Also by the clock: a renewal confirmed long ago is no lease, even if a late timer has not said so yet.
    return this.mode === 'held' && !this.stopped && this.clock.now() < (this.deadline ?? 0);
  }

  // -------------------------------------------------------------------------------------------------------------

  /** Grants a new lease, writes a pending fence report and the liveness key, and becomes `held`. */
  private async acquire(): Promise<void> {
    const epoch = this.epoch;
    const ops = this.opts.ops;
    const send = this.clock.now();
    const id = await ops.grant(this.ttlMs / 1000);
    try {
      if (this.pendingReport) await ops.putFenceReport(this.pendingReport);
      await ops.putLiveness(id, {
        host: this.opts.host,
        leaseId: id,
        since: new Date(send).toISOString(),
        heartbeatSeconds: this.opts.heartbeatSeconds,
      });
    } catch (e) {
      // The lease is of no use without its key: let it go (etcd would expire it anyway).
      void ops.revoke(id).catch(() => {});
      throw e;
    }
    if (epoch !== this.epoch || this.stopped) {
      void ops.revoke(id).catch(() => {});
      return;
    }
    if (this.pendingReport)
      this.log.info({ report: this.pendingReport }, 'cluster: fence report written; a new lease is held');
    this.pendingReport = undefined;
    this.leaseId = id;
    this.etcd = 'ok';
    this.confirmed(send);
  }

  /** A renewal (or grant) sent at `send` was confirmed: `held`, deadline moved, next renewal in a heartbeat. */
  private confirmed(send: number): void {
    const was = this.mode;
    this.lastRenewal = send;
    this.mode = 'held';
    this.precheck = undefined;
    this.clear('hold');
    if (was !== 'held') this.log.info({ leaseId: this.leaseId, was }, 'cluster: lease held');
    this.armDeadline();
    this.schedule('renew', this.opts.heartbeatSeconds * 1000, () => void this.attempt());
    this.opts.onHeld?.();
  }

  private armDeadline(): void {
    const deadline = this.deadline!;
    const now = this.clock.now();
    this.schedule('precheck', deadline - PEER_LEASE_TIMEOUT_MS - now, () => this.startPrecheck());
    this.schedule('deadline', deadline - now, () => void this.atDeadline());
  }

  /**
   * One attempt now (none while one of this lease's is in flight: that one is awaited): renew the lease in hand, or
   * grant a new one without. Resolves whether the lease is held after it. A failed attempt schedules the next.
   */
  private attempt(): Promise<boolean> {
    if (this.stopped || this.fencing) return Promise.resolve(false);
    if (this.current?.epoch === this.epoch) return this.current.p;
    const epoch = this.epoch;
    const p = (this.leaseId !== undefined ? this.renewOnce(this.leaseId) : this.acquireOnce()).finally(() => {
      if (this.current?.p === p) this.current = undefined;
    });
    this.current = { epoch, p };
    return p;
  }

  private async renewOnce(id: string): Promise<boolean> {
    const epoch = this.epoch;
    const send = this.clock.now();
    let ttl: number;
    try {
      ttl = await this.opts.ops.keepAlive(id);
    } catch (e) {
      if (epoch !== this.epoch || this.stopped) return false;
      if (this.mode === 'held') {
        this.mode = 'renewing';
        this.log.warn(
          { leaseId: id, err: msg(e), deadline: new Date(this.deadline!).toISOString() },
          'cluster: lease renewal failed; retrying until the fence deadline',
        );
      }
      this.failed();
      return false;
    }
    if (epoch !== this.epoch || this.stopped) return false;
    this.etcd = 'ok';
    if (ttl <= 0) {
      await this.fence(`lease ${id} is gone (etcd answered TTL ${ttl})`);
      return false;
    }
    this.confirmed(send);
    return true;
  }

  private async acquireOnce(): Promise<boolean> {
    try {
      await this.acquire();
      return this.mode === 'held';
    } catch {
      if (!this.stopped) this.failed();
      return false;
    }
  }

  /** After a failed attempt: look at etcd, and try again in LEASE_RETRY_MS. */
  private failed(): void {
    this.refreshView();
    if (this.mode !== 'held') this.schedule('renew', LEASE_RETRY_MS, () => void this.attempt());
  }

  /** Starts the outage check so that its verdict is in by the deadline. */
  private startPrecheck(): void {
    if (this.stopped || (this.mode !== 'renewing' && this.mode !== 'held')) return;
    if (this.mode === 'held') this.mode = 'renewing'; // a renewal is hanging: no confirmation for TTL - margin
    const pc: { epoch: number; verdict?: HoldVerdict } = { epoch: this.epoch };
    this.precheck = pc;
    void this.safeCheck().then((v) => {
      pc.verdict = v;
    });
  }

  private async atDeadline(): Promise<void> {
    if (this.stopped || (this.mode !== 'renewing' && this.mode !== 'held')) return;
    const pc = this.precheck;
    const verdict =
      pc && pc.epoch === this.epoch && pc.verdict
        ? pc.verdict
        : { proven: false, reason: 'the peers did not all answer before the fence deadline' };
    await this.decide(
      `no lease renewal confirmed since ${new Date(this.lastRenewal!).toISOString()}`,
      verdict,
    );
  }

  /** At a deadline: `hold` when the outage is proven etcd-wide, else fence. */
  private async decide(why: string, verdict: HoldVerdict): Promise<void> {
    if (this.stopped || this.mode === 'fenced' || this.mode === 'hold') return;
    if (!verdict.proven) return this.fence(`${why}; ${verdict.reason}`);
    this.mode = 'hold';
    this.clear('precheck');
    this.clear('deadline');
    this.log.warn(
      { why, peers: verdict.reason },
      'cluster: HOLD: etcd is unreachable for every host; keeping running VMs, starting none',
    );
    // Keep trying: the old lease (a new leader extends every lease by its TTL), or a first grant.
    this.schedule('renew', LEASE_RETRY_MS, () => void this.attempt());
    this.schedule('hold', HOLD_PEER_CHECK_MS, () => void this.holdCheck());
  }

  /** In `hold`: fence the moment a peer does not answer or holds its lease while this host still cannot renew. */
  private async holdCheck(): Promise<void> {
    if (this.stopped || this.mode !== 'hold') return;
    const epoch = this.epoch;
    const v = await this.safeCheck();
    if (epoch !== this.epoch || this.mode !== 'hold') return;
    if (v.proven) {
      this.schedule('hold', HOLD_PEER_CHECK_MS, () => void this.holdCheck());
      return;
    }
    if (v.heldPeer !== undefined) {
      // etcd is back for a peer: one more try right now before fencing (it may be back for us too).
      const ok = await this.attempt();
      if (ok || epoch !== this.epoch || this.mode !== 'hold') return;
    }
    await this.fence(`in hold: ${v.reason}`);
  }

  /** Stops every VM at once, then keeps trying for a new lease. Called once per episode. */
  private async fence(reason: string): Promise<void> {
    if (this.stopped || this.mode === 'fenced') return;
    this.epoch++;
    this.fencing = true;
    for (const t of this.timers.values()) this.clock.clearTimeout(t);
    this.timers.clear();
    this.precheck = undefined;
    this.mode = 'fenced';
    const at = this.clock.now();
    this.fencedAt = at;
    const old = this.leaseId;
    this.leaseId = undefined;
    this.lastRenewal = undefined;
    this.log.error({ host: this.opts.host, reason }, 'cluster: FENCING: stopping every VM of this host now');
    let vms: string[] = [];
    try {
      vms = await this.opts.fenceVms(reason);
    } catch (e) {
      this.log.error({ err: msg(e) }, 'cluster: FENCING failed for some VMs');
    }
    this.fencedVms = vms;
    this.log.error({ vms, ms: Math.round(this.clock.now() - at) }, 'cluster: FENCED: VMs stopped');
    // One report per episode: a fence while an earlier report waits keeps the earlier VMs too.
    const prev = this.pendingReport;
    this.pendingReport = {
      host: this.opts.host,
      at: new Date(at).toISOString(),
      reason,
      vms: [...new Set([...(prev?.vms ?? []), ...vms])],
    };
    if (old !== undefined) void this.opts.ops.revoke(old).catch(() => {});
    this.fencing = false;
    this.refreshView();
    if (!this.stopped) this.schedule('renew', LEASE_RETRY_MS, () => void this.attempt());
  }

  private async safeCheck(): Promise<HoldVerdict> {
    try {
      return await this.opts.checkPeers();
    } catch (e) {
      return { proven: false, reason: `the outage check failed: ${msg(e)}` };
    }
  }

  /** Updates the etcd view after a failure (one look at a time; informative only). */
  private refreshView(): void {
    if (this.viewing) return;
    this.viewing = true;
    this.opts.ops
      .view()
      .then(
        (v) => {
          this.etcd = v;
        },
        () => {
          this.etcd = 'unreachable';
        },
      )
      .finally(() => {
        this.viewing = false;
      });
  }

  private schedule(name: 'renew' | 'precheck' | 'deadline' | 'hold', inMs: number, fn: () => void): void {
    this.clear(name);
    if (this.stopped) return;
    this.timers.set(
      name,
      this.clock.setTimeout(
        () => {
          this.timers.delete(name);
          fn();
        },
        Math.max(0, inMs),
      ),
    );
  }

  private clear(name: 'renew' | 'precheck' | 'deadline' | 'hold'): void {
    const t = this.timers.get(name);
    if (t !== undefined) this.clock.clearTimeout(t);
    this.timers.delete(name);
  }
}

const msg = (e: unknown) => (e as Error)?.message ?? String(e);
