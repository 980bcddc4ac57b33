// The controller's coordination on etcd (issue 11, parts 2 and 3): hosts' leases (liveness), the controllers'
// election (a candidacy, with its own lease keeper, is etcd-election.ts), and etcd members' health.
// Everything read from etcd (lease values, the leader's record, member URLs) is untrusted: bounded and parsed.

import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import {
  CLUSTER_HEARTBEAT_S_DEFAULT,
  clusterKeys,
  type HostLeaseValue,
  HostLeaseValueSchema,
} from '../../shared/cluster.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { type EtcdConnection, etcdClient, etcdFailure } from '../../shared/etcd.js';
import { ETCD_MEMBERS_MAX } from '../../shared/limits.js';
import { type Logger, log as rootLog } from '../../shared/log.js';
import {
  ControllerInfoSchema,
  ELECTION_TTL_S_DEFAULT,
  EtcdCampaign,
  electionPrefix,
} from './etcd-election.js';
import type { CampaignEvents, ControllerInfo, Coordination, EtcdMemberView, LiveHost } from './types.js';

/** Largest host lease value or leader record read from etcd (they are ~200 bytes). */
export const COORDINATION_VALUE_MAX_BYTES = 4096;
/** Hosts read from the lease prefix at most (the rest are ignored, with a log). */
export const LIVE_HOSTS_MAX = 4096;
/** One member's status request in `members()`. */
export const MEMBER_STATUS_TIMEOUT_MS = 2_000;

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

export { ELECTION_TTL_S_DEFAULT, type EtcdCampaign } from './etcd-election.js';
