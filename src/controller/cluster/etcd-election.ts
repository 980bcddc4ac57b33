// The controllers' election on etcd (issue 11, part 2), in etcd3's key layout (`/vmlink/election/controller/<lease>`,
// leader = lowest create revision) with our own lease keeper: a controller gives up the active role before etcd can
// expire its lease (the send time of its last confirmed keepalive + TTL - margin), so etcd never sees two actives.

import { type Etcd3, EtcdLeaseInvalidError } from 'etcd3';
import { z } from 'zod';
import { clusterKeys, ETCD_PREFIX } from '../../shared/cluster.js';
import type { Logger } from '../../shared/log.js';
import type { Campaign, CampaignEvents } from './types.js';

/** The election lease's TTL (s): a dead active controller is replaced within about this long. */
export const ELECTION_TTL_S_DEFAULT = 3;
/** A controller steps down this long before etcd could expire its election lease. */
export const ELECTION_MARGIN_MS = 500;
/** After a failed keepalive, the campaign tries again this often (until it renews or its deadline passes). */
export const ELECTION_RETRY_MS = 250;
/** A candidate that lost its lease (or could not get one) tries again after this. */
export const CAMPAIGN_RESTART_MS = 500;
/** A clock that never jumps (the election's deadlines must not move when someone sets the wall clock). */
const monotonicMs = (): number => performance.now();

/** The election's prefix for etcd3's Election (`<ns>/election/<name>/`). */
const ELECTION_NAME = 'controller';
export const electionPrefix = `${clusterKeys.election}/`;
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
      // etcd3's watch filter (only delete events), not a test runner's .only.
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
