// The controller's coordination on etcd (issue 11, parts 2 and 3): hosts' leases (liveness), the controllers'
// election, and etcd members' health. The election uses etcd3's key layout (`/vmlink/election/controller/<lease>`,
// leader = lowest create revision) with our own lease keeper: a controller gives up the active role before etcd can
// expire its lease (the send time of its last confirmed keepalive + TTL - margin), so etcd never sees two actives.
// Everything read from etcd (lease values, the leader's record, member URLs) is untrusted: bounded and parsed.

import { type Etcd3, EtcdLeaseInvalidError, type IKeyValue, type Watcher } from 'etcd3';
import { z } from 'zod';
import {
  CLUSTER_HEARTBEAT_S_DEFAULT,
  clusterKeys,
  ETCD_PREFIX,
  type HostLeaseValue,
  HostLeaseValueSchema,
} from '../../shared/cluster.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { type EtcdConnection, etcdClient, etcdFailure } from '../../shared/etcd.js';
import { ETCD_MEMBERS_MAX } from '../../shared/limits.js';
import { type Logger, log as rootLog } from '../../shared/log.js';
import type {
  Campaign,
  CampaignEvents,
  ControllerInfo,
  Coordination,
  EtcdMemberView,
  LiveHost,
} from './types.js';

/** The election lease's TTL (s): a dead active controller is replaced within about this long. */
export const ELECTION_TTL_S_DEFAULT = 3;
/** A controller steps down this long before etcd could expire its election lease. */
export const ELECTION_MARGIN_MS = 500;
/** After a failed keepalive, the campaign tries again this often (until it renews or its deadline passes). */
export const ELECTION_RETRY_MS = 250;
/** A candidate that lost its lease (or could not get one) tries again after this. */
export const CAMPAIGN_RESTART_MS = 500;
/** Largest host lease value or leader record read from etcd (they are ~200 bytes). */
export const COORDINATION_VALUE_MAX_BYTES = 4096;
/** Hosts read from the lease prefix at most (the rest are ignored, with a log). */
export const LIVE_HOSTS_MAX = 4096;
/** One member's status request in `members()`. */
export const MEMBER_STATUS_TIMEOUT_MS = 2_000;

/** A clock that never jumps (the election's deadlines must not move when someone sets the wall clock). */
const monotonicMs = (): number => performance.now();

/** The election's prefix for etcd3's Election (`<ns>/election/<name>/`). */
const ELECTION_NAME = 'controller';
const electionPrefix = `${clusterKeys.election}/`;
if (electionPrefix !== `${ETCD_PREFIX}election/${ELECTION_NAME}/`)
  throw new Error('clusterKeys.election must be etcd3 Election layout below ETCD_PREFIX');

/** A controller's record in the election, as read back from etcd. */
export const ControllerInfoSchema = z
  .object({
    id: z.string().min(1).max(256),
    name: z.string().min(1).max(64),
    address: z.string().min(1).max(512),
    // Its TCP listener (controllers helper: cluster/types.ts ControllerInfo.tcp).
    tcp: z.string().min(1).max(512).optional(),
    since: z.string().max(64),
  })
  .strict();

/** Options of `EtcdCoordination`. */
export interface EtcdCoordinationOptions {
  /** Where etcd is and our TLS credentials: `members()` asks each member itself with them. */
  connection?: EtcdConnection;
  /** How often `watchHosts` re-reads every lease in case a watch missed something (default: the heartbeat). */
  heartbeatSeconds?: number;
  /** The election lease's TTL in seconds (default ELECTION_TTL_S_DEFAULT; etcd raises it to its minimum). */
  electionTtlS?: number;
  /** Whether `close()` closes the client (default false: it belongs to the store or the caller). */
  ownsClient?: boolean;
  log?: Logger;
}

/** Reads a value from etcd as bounded JSON; undefined (with the reason) when it is not. */
function readJson(v: Buffer): { ok: true; value: unknown } | { ok: false; why: string } {
  if (v.length > COORDINATION_VALUE_MAX_BYTES) return { ok: false, why: `${v.length} bytes, over the limit` };
  try {
    return { ok: true, value: JSON.parse(v.toString('utf8')) };
  } catch {
    return { ok: false, why: 'not JSON' };
  }
}

/** Host liveness, the election and etcd's health, on etcd. */
export class EtcdCoordination implements Coordination {
  private readonly log: Logger;
  private readonly heartbeatMs: number;
  private readonly electionTtlS: number;
  /** `host/leaseId` -> when this process first saw it. */
  private readonly seen = new Map<string, number>();
  private readonly campaigns = new Set<EtcdCampaign>();
  private readonly stoppers = new Set<() => void>();
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    private readonly opts: EtcdCoordinationOptions = {},
  ) {
    this.log = opts.log ?? rootLog.child({ component: 'etcd-coordination' });
    const hb = opts.heartbeatSeconds ?? CLUSTER_HEARTBEAT_S_DEFAULT;
    if (!(hb > 0)) throw new InvalidRequestError(`heartbeat must be positive, got ${hb}`);
    this.heartbeatMs = hb * 1000;
    this.electionTtlS = opts.electionTtlS ?? ELECTION_TTL_S_DEFAULT;
    if (!Number.isInteger(this.electionTtlS) || this.electionTtlS < 2)
      throw new InvalidRequestError(`the election lease TTL must be a whole number of seconds >= 2`);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Host leases.

  async liveHosts(): Promise<LiveHost[]> {
    return (await this.readHosts()).hosts;
  }

  /** Every live host at one revision, and that revision. */
  private async readHosts(): Promise<{ hosts: LiveHost[]; revision: string }> {
    let res: Awaited<ReturnType<ReturnType<Etcd3['getAll']>['exec']>>;
    try {
      res = await this.client
        .getAll()
        .prefix(clusterKeys.hostLeasePrefix)
        .limit(LIVE_HOSTS_MAX + 1)
        .exec();
    } catch (e) {
      throw etcdFailure(e, 'read the host leases');
    }
    if (res.kvs.length > LIVE_HOSTS_MAX)
      this.log.warn({ max: LIVE_HOSTS_MAX }, 'more host lease keys than the limit: the rest are ignored');
    const now = Date.now();
    const hosts: LiveHost[] = [];
    const current = new Set<string>();
    for (const kv of res.kvs.slice(0, LIVE_HOSTS_MAX)) {
      const host = this.parseHostLease(kv);
      if (!host) continue;
      const id = `${host.host}/${kv.lease}`;
      current.add(id);
      let seenAt = this.seen.get(id);
      if (seenAt === undefined) {
        seenAt = now;
        this.seen.set(id, now);
      }
      hosts.push({ host: host.host, value: host, seenAt });
    }
    // Forget leases that ended: a host that comes back with a new lease is young again.
    for (const id of this.seen.keys()) if (!current.has(id)) this.seen.delete(id);
    hosts.sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
    return { hosts, revision: res.header.revision };
  }

  /** A lease key's value if it is one: attached to a lease, bounded, valid, and naming the host of its key. */
  private parseHostLease(kv: IKeyValue): HostLeaseValue | undefined {
    const key = kv.key.toString();
    const name = key.slice(clusterKeys.hostLeasePrefix.length);
    const bad = (why: string) => {
      this.log.warn({ key: key.slice(0, 200), why }, 'host lease key skipped');
      return undefined;
    };
    // A key without a lease never expires: it would keep a dead host alive forever.
    if (!kv.lease || kv.lease === '0') return bad('not attached to a lease');
    const j = readJson(kv.value);
    if (!j.ok) return bad(j.why);
    const p = HostLeaseValueSchema.safeParse(j.value);
    if (!p.success) return bad(p.error.issues[0]?.message ?? 'invalid');
    if (p.data.host !== name) return bad(`value names host ${p.data.host.slice(0, 64)}`);
    return p.data;
  }

  watchHosts(onChange: (hosts: LiveHost[]) => void): () => void {
    let stopped = false;
    let watcher: Watcher | undefined;
    let last: string | undefined;
    let running = false;
    let again = false;
    let timer: NodeJS.Timeout | undefined;

    /** Re-reads every lease (one at a time; a change during a read triggers one more) and reports a change. */
    const refresh = async (): Promise<string | undefined> => {
      if (running) {
        again = true;
        return undefined;
      }
      running = true;
      let revision: string | undefined;
      try {
        do {
          again = false;
          try {
            const r = await this.readHosts();
            revision = r.revision;
            const sig = JSON.stringify(r.hosts.map((h) => [h.host, h.value, h.seenAt]));
            if (!stopped && sig !== last) {
              last = sig;
              try {
                onChange(r.hosts);
              } catch (e) {
                this.log.error({ err: e }, 'watchHosts callback failed');
              }
            }
          } catch (e) {
            // Unknown is not empty: keep the last set until etcd answers again.
            this.log.warn(
              { err: (e as Error).message },
              'host leases unreadable; keeping the last known set',
            );
          }
        } while (again && !stopped);
      } finally {
        running = false;
      }
      return revision;
    };

    const schedule = () => {
      if (stopped) return;
      timer = setTimeout(() => {
        void refresh().finally(schedule);
      }, this.heartbeatMs);
      timer.unref?.();
    };

    const startWatch = async (fromRevision: string | undefined) => {
      try {
        const b = this.client.watch().prefix(clusterKeys.hostLeasePrefix);
        if (fromRevision !== undefined) b.startRevision((BigInt(fromRevision) + 1n).toString());
        const w = await b.create();
        if (stopped) {
          await w.cancel();
          return;
        }
        watcher = w;
        w.on('data', () => void refresh());
        w.on('connected', () => void refresh()); // reconnected: something may have happened meanwhile
        w.on('error', (e) => this.log.warn({ err: e.message }, 'host lease watch error (re-reads continue)'));
      } catch (e) {
        // The periodic re-read covers it; try the watch again at the next beat.
        this.log.warn({ err: (e as Error).message }, 'host lease watch could not start');
        if (!stopped) {
          const t = setTimeout(() => void startWatch(undefined), this.heartbeatMs);
          t.unref?.();
          retryTimers.add(t);
        }
      }
    };
    const retryTimers = new Set<NodeJS.Timeout>();

    void (async () => {
      const rev = await refresh();
      if (!stopped) await startWatch(rev);
      schedule();
    })();

    const stop = () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      for (const t of retryTimers) clearTimeout(t);
      void watcher?.cancel().catch(() => undefined);
      this.stoppers.delete(stop);
    };
    this.stoppers.add(stop);
    return stop;
  }

  // -------------------------------------------------------------------------------------------------------------
  // The election.

  campaign(self: ControllerInfo, events: CampaignEvents): EtcdCampaign {
    if (this.closed) throw new InvalidRequestError('coordination is closed');
    const value = JSON.stringify(ControllerInfoSchema.parse(self));
    const c = new EtcdCampaign(this.client, value, this.electionTtlS, events, this.log, () =>
      this.campaigns.delete(c),
    );
    this.campaigns.add(c);
    return c;
  }

  async activeController(): Promise<ControllerInfo | undefined> {
    let res: Awaited<ReturnType<ReturnType<Etcd3['getAll']>['exec']>>;
    try {
      res = await this.client.getAll().prefix(electionPrefix).sort('Create', 'Ascend').limit(1).exec();
    } catch (e) {
      throw etcdFailure(e, 'read the active controller');
    }
    const kv = res.kvs[0];
    if (!kv) return undefined;
    const j = readJson(kv.value);
    const p = j.ok ? ControllerInfoSchema.safeParse(j.value) : undefined;
    if (!p?.success) {
      this.log.warn({ key: kv.key.toString().slice(0, 200) }, 'election leader record is not a controller');
      return undefined;
    }
    return p.data;
  }

  // -------------------------------------------------------------------------------------------------------------
  // etcd's members.

  async members(): Promise<EtcdMemberView[]> {
    const conn = this.opts.connection;
    const tls = conn?.tls;
    let listed: Array<{ name: string; endpoint: string | undefined }> = [];
    let listError: string | undefined;
    try {
      const r = await this.client.cluster.memberList({});
      if (r.members.length > ETCD_MEMBERS_MAX)
        this.log.warn({ count: r.members.length }, 'etcd lists more members than vmlink supports');
      listed = r.members.slice(0, ETCD_MEMBERS_MAX).map((m) => ({
        name: String(m.name || m.ID).slice(0, 64),
        endpoint: m.clientURLs[0],
      }));
    } catch (e) {
      listError = etcdFailure(e, 'list the members').message;
    }
    // Configured endpoints no member lists (or all of them, when the list failed) are shown by their address.
    for (const ep of conn?.endpoints ?? [])
      if (!listed.some((m) => m.endpoint === ep)) listed.push({ name: new URL(ep).host, endpoint: ep });
    if (listed.length === 0 && listError)
      return [{ name: '?', endpoint: '?', healthy: false, error: listError }];
    return Promise.all(
      listed.slice(0, ETCD_MEMBERS_MAX * 2).map(async ({ name, endpoint }): Promise<EtcdMemberView> => {
        if (!endpoint) return { name, endpoint: '', healthy: false, error: 'not started (no client URL)' };
        // Member URLs come from etcd: only http(s)://host:port, and https whenever we use TLS.
        const m = /^(https?):\/\/[\w.:[\]-]{1,300}$/.exec(endpoint);
        if (!m || (tls && m[1] !== 'https'))
          return {
            name,
            endpoint: endpoint.slice(0, 200),
            healthy: false,
            error: tls ? 'client URL is not https://host:port' : 'client URL is not http(s)://host:port',
          };
        const c = etcdClient(
          { endpoints: [endpoint], ...(tls ? { tls } : {}) },
          { retry: false, requestTimeoutMs: MEMBER_STATUS_TIMEOUT_MS },
        );
        try {
          const s = await c.maintenance.status();
          const hasLeader = s.leader !== '0' && s.leader !== '';
          return {
            name,
            endpoint,
            healthy: hasLeader,
            hasLeader,
            isLeader: hasLeader && s.leader === s.header.member_id,
            ...(hasLeader ? {} : { error: 'no leader (no quorum)' }),
          };
        } catch (e) {
          return { name, endpoint, healthy: false, error: etcdFailure(e, 'status').message.slice(0, 300) };
        } finally {
          c.close();
        }
      }),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const stop of [...this.stoppers]) stop();
    await Promise.all([...this.campaigns].map((c) => c.resign().catch(() => undefined)));
    if (this.opts.ownsClient) this.client.close();
  }
}

/**
 * A candidacy for the active role, kept until `resign()`: a lease of `ttlS` seconds renewed every third of it, a key
 * `/vmlink/election/controller/<lease>` (etcd3's layout) and a wait until every older candidate's key is gone.
 * `lost` comes when the deadline (last confirmed keepalive's send time + TTL - margin) passes, before etcd can
 * expire the lease; then it campaigns again by itself.
 */
export class EtcdCampaign implements Campaign {
  private stopped = false;
  private active = false;
  private leaseId: string | undefined;
  /** Leases of ended candidacies whose revoke failed (etcd away): revoked before the next one, so their keys do
   * not make the new candidacy wait behind our own old key. */
  private readonly staleLeases = new Set<string>();
  /** Until when our lease surely lives (`monotonicMs()`); 0 without a lease. */
  private deadline = 0;
  private deadlineTimer: NodeJS.Timeout | undefined;
  /** The candidacy's waits, woken when its deadline passes or it resigns. */
  private readonly wakers = new Set<() => void>();
  private readonly done: Promise<void>;

  constructor(
    private readonly client: Etcd3,
    private readonly value: string,
    private readonly ttlS: number,
    private readonly events: CampaignEvents,
    private readonly log: Logger,
    private readonly onEnd: () => void,
  ) {
    this.done = this.run();
  }

  /** Whether this controller is active and its lease surely alive right now (check before a guarded write). */
  holds(): boolean {
    return this.active && !this.stopped && monotonicMs() < this.deadline;
  }

  async resign(): Promise<void> {
    if (this.stopped) return this.done;
    this.stopped = true;
    this.active = false;
    this.wakeAll();
    await this.done;
  }

  private async run(): Promise<void> {
    try {
      while (!this.stopped) {
        try {
          await this.candidacy();
        } catch (e) {
          if (!this.stopped) this.log.warn({ err: (e as Error).message }, 'election candidacy ended');
        }
        await this.endLease();
        if (!this.stopped) await this.nap(CAMPAIGN_RESTART_MS);
      }
    } finally {
      this.onEnd();
    }
  }

  /** The lease's time is up (or we resigned): give up the role at once. */
  private expire(reason: string): void {
    this.deadline = 0;
    if (this.active) {
      this.active = false;
      try {
        this.events.lost(reason);
      } catch (e) {
        this.log.error({ err: e }, 'campaign lost() callback failed');
      }
    }
    this.wakeAll();
  }

  private setDeadline(sentAt: number, ttlS: number): void {
    this.deadline = sentAt + ttlS * 1000 - ELECTION_MARGIN_MS;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = setTimeout(
      () => this.expire(`election lease not renewed for ${ttlS}s (etcd unreachable or slow)`),
      Math.max(0, this.deadline - monotonicMs()),
    );
  }

  private wakeAll(): void {
    const ws = [...this.wakers];
    this.wakers.clear();
    for (const w of ws) w();
  }

  /** Sleeps `ms` unless woken (deadline, resign). */
  private nap(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.wakers.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wakers.add(done);
    });
  }

  /** Whether this candidacy can go on: not resigned, lease alive. */
  private alive(): boolean {
    return !this.stopped && monotonicMs() < this.deadline;
  }

  /** One candidacy: grant, register, wait for the older ones to go, serve, until the lease is gone. */
  private async candidacy(): Promise<void> {
    await this.revokeStale();
    if (this.stopped) return;
    const sentAt = monotonicMs();
    const grant = await this.client.leaseClient.leaseGrant({ TTL: this.ttlS, ID: 0 });
    this.leaseId = grant.ID;
    this.setDeadline(sentAt, Number(grant.TTL));
    if (this.stopped) return;
    const key = `${electionPrefix}${grant.ID}`;
    const put = await this.client
      .if(key, 'Create', '==', 0)
      .then(this.client.put(key).value(this.value).lease(grant.ID))
      .commit();
    if (!put.succeeded) throw new Error(`election key ${key} already exists`);
    const myRevision = BigInt(put.header.revision);

    // Renew in the background for the whole candidacy.
    const keeper = this.keepAlive(grant.ID);
    try {
      // Wait until no candidate created before us is left (etcd3's / Go client's waitForElected).
      while (this.alive()) {
        const older = await this.client
          .getAll()
          .prefix(electionPrefix)
          .maxCreateRevision((myRevision - 1n).toString())
          .sort('Create', 'Descend')
          .limit(1)
          .exec();
        const kv = older.kvs[0];
        if (!kv) break;
        await this.waitForDelete(kv.key, older.header.revision);
      }
      if (!this.alive()) return;
      this.active = true;
      this.log.info({ lease: grant.ID }, 'elected: this controller is active');
      try {
        this.events.elected();
      } catch (e) {
        this.log.error({ err: e }, 'campaign elected() callback failed');
      }
      // Serve until the lease's time is up or we resign.
      while (this.alive()) await this.nap(60_000);
    } finally {
      if (this.active && !this.stopped) this.expire('election lease lost');
      this.active = false;
      await keeper;
    }
  }

  /** Resolves when `key` is deleted (or the candidacy ends). */
  private async waitForDelete(key: Buffer, revision: string): Promise<void> {
    // Every step is also woken by our deadline or a resign: a watch that cannot start (etcd away) never holds us.
    let woken = false;
    let wake = () => {};
    const woke = new Promise<void>((resolve) => {
      wake = () => {
        woken = true;
        this.wakers.delete(wake);
        resolve();
      };
      this.wakers.add(wake);
    });
    if (!this.alive()) wake();
    const creating = this.client
      .watch()
      .key(key)
      .startRevision((BigInt(revision) + 1n).toString())
      .only('delete')
      .create();
    const w = await Promise.race([creating, woke.then(() => undefined)]);
    if (!w) {
      void creating.then((late) => late.cancel()).catch(() => undefined);
      return;
    }
    try {
      if (woken) return;
      await new Promise<void>((resolve) => {
        void woke.then(resolve);
        w.once('delete', () => resolve());
        // A broken watch: look again (the loop re-reads the older candidates).
        w.once('disconnected', () => resolve());
        w.once('error', () => resolve());
      });
    } finally {
      this.wakers.delete(wake);
      // Not awaited: cancelling a watch on a lost connection may wait for the connection.
      void w.cancel().catch(() => undefined);
    }
  }

  /** Renews the lease every third of its TTL (every ELECTION_RETRY_MS after a failure) while the candidacy lives. */
  private async keepAlive(id: string): Promise<void> {
    const every = (this.ttlS * 1000) / 3;
    while (this.alive()) {
      await this.nap(every);
      while (this.alive()) {
        const sentAt = monotonicMs();
        try {
          const ttl = await this.keepAliveOnce(id);
          if (ttl <= 0) {
            this.expire('election lease expired in etcd');
            return;
          }
          if (this.alive()) this.setDeadline(sentAt, ttl);
          break;
        } catch (e) {
          this.log.debug({ err: (e as Error).message }, 'election keepalive failed; retrying');
          await this.nap(ELECTION_RETRY_MS);
        }
      }
    }
  }

  /** One keepalive on its own stream; resolves with the TTL etcd gave (0: the lease is gone). */
  private async keepAliveOnce(id: string): Promise<number> {
    const stream = await this.client.leaseClient.leaseKeepAlive();
    try {
      return await new Promise<number>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('keepalive timed out')), this.ttlS * 1000);
        stream.on('data', (r) => {
          clearTimeout(t);
          resolve(Number(r.TTL));
        });
        stream.on('error', (e: Error) => {
          clearTimeout(t);
          reject(e);
        });
        stream.write({ ID: id });
      });
    } finally {
      stream.end();
    }
  }

  /** Revokes the candidacy's lease (its key goes at once), best effort. */
  private async endLease(): Promise<void> {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.deadline = 0;
    const id = this.leaseId;
    this.leaseId = undefined;
    if (!id) return;
    this.staleLeases.add(id);
    await this.revokeStale();
  }

  /** Revokes the leases of ended candidacies; one that etcd no longer knows is done with too. */
  private async revokeStale(): Promise<void> {
    for (const id of [...this.staleLeases]) {
      try {
        await this.client.leaseClient.leaseRevoke({ ID: id });
        this.staleLeases.delete(id);
      } catch (e) {
        if (e instanceof EtcdLeaseInvalidError) this.staleLeases.delete(id);
        else this.log.debug({ err: (e as Error).message }, 'election lease revoke failed (retried later)');
      }
    }
  }
}
