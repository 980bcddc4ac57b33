// The agent's membership on etcd: the lease keeper (lease-keeper.ts) over real etcd operations, the outage check
// (peers.ts), and the owner check before a VM starts or opens its disks (docs/ha.md, "Ownership and fencing tokens").
import type { Etcd3 } from 'etcd3';
import {
  type ClusterMembers,
  ClusterMembersSchema,
  clusterKeys,
  compareTokens,
  type FenceReport,
  type HostLeaseValue,
  type LeaseStatus,
  OwnerRecordSchema,
  ownerKey,
} from '../../shared/cluster.js';
import { FencedError } from '../../shared/errors.js';
import { type EtcdConnection, etcdClient } from '../../shared/etcd.js';
import { ETCD_REQUEST_TIMEOUT_MS, ETCD_VALUE_MAX_BYTES } from '../../shared/limits.js';
import type { Limiter } from '../../shared/queue.js';
import type { TlsCredentials } from '../../shared/tls.js';
import type { Fence } from '../wire.js';
import { type Clock, type EtcdView, type HoldVerdict, LeaseKeeper, type LeaseOps } from './lease-keeper.js';
import { type Peer, PeerCheck } from './peers.js';
import type { ClusterMembership, FenceVms } from './types.js';

/** Options of `EtcdMembership`. */
export interface EtcdMembershipOptions {
  host: string;
  /** etcd's endpoints, and this host's certificate as its etcd identity (CN = host = etcd user). */
  connection: EtcdConnection;
  heartbeatSeconds: number;
  /** The agent's state directory (the membership cache). */
  stateDir: string;
  /** Stops every VM of this host at once (Agent.fenceVms). */
  fenceVms: FenceVms;
  /** This host's credentials for asking peers over mutual TLS (absent: `http://` peers only, tests). */
  peerTls?: TlsCredentials;
  /** Tests: another way to ask a peer, another clock. */
  askPeer?: (peer: Peer) => Promise<LeaseStatus>;
  /**
   * An etcd client made with `retry: false` to share (the simulated fleet: one connection for 1,000 hosts' leases);
   * `stop()` leaves it open. Default: one of its own on `connection`.
   */
  client?: Etcd3;
  clock?: Clock;
  /**
   * Runs each whole read of the membership (the simulated fleet: one limiter for all its hosts, as their reads leave
   * one process; a real agent reads only its own). Default: at once.
   */
  membersReads?: Limiter;
}

/** `ClusterMembership` on etcd. */
export class EtcdMembership implements ClusterMembership {
  readonly client: Etcd3;
  readonly keeper: LeaseKeeper;
  readonly peers: PeerCheck;
  private readonly host: string;
  /** Deadline of one lease operation: short, so that a hung one never stands between two retries for long. */
  private readonly leaseOpMs: number;
  private readonly ownClient: boolean;
  /** The revision of the membership last read whole (readMembers). */
  private membersRevision: string | undefined;

  constructor(opts: EtcdMembershipOptions) {
    this.host = opts.host;
    // The keeper times its own retries: the client must fail at once, not after its own backoff.
    this.ownClient = !opts.client;
    this.client = opts.client ?? etcdClient(opts.connection, { retry: false });
    this.leaseOpMs = Math.min(ETCD_REQUEST_TIMEOUT_MS, (opts.heartbeatSeconds * 1000) / 4);
    const read = () => this.readMembers();
    const reads = opts.membersReads;
    this.peers = new PeerCheck({
      host: opts.host,
      stateDir: opts.stateDir,
      changed: () => this.membersChanged(),
      readMembers: reads ? () => reads.run(read) : read,
      // Each host looks (and reads a change) at its own point of the heartbeat after a renewal (peers.ts).
      spreadMs: opts.heartbeatSeconds * 1000,
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.peerTls ? { tls: opts.peerTls } : {}),
      ...(opts.askPeer ? { ask: opts.askPeer } : {}),
    });
    this.keeper = new LeaseKeeper({
      host: opts.host,
      heartbeatSeconds: opts.heartbeatSeconds,
      ops: this.ops(),
      fenceVms: opts.fenceVms,
      checkPeers: (): Promise<HoldVerdict> => this.peers.check(),
      onHeld: () => void this.peers.refresh(),
      ...(opts.clock ? { clock: opts.clock } : {}),
    });
  }

  start(): Promise<void> {
    return this.keeper.start();
  }

  async stop(): Promise<void> {
    this.peers.stop();
    await this.keeper.stop();
    if (this.ownClient) this.client.close();
  }

  status(): LeaseStatus {
    return this.keeper.status();
  }

  verifiedStatus(boundMs: number): Promise<LeaseStatus> {
    return this.keeper.verifiedStatus(boundMs);
  }

  async assertOwner(vm: string, fence: Fence | undefined): Promise<void> {
    const subject = `vm/${vm}`;
    const refuse = (why: string) =>
      new FencedError(`VM ${vm} is not started on host ${this.host}: ${why}`, subject);
    const notHeld = () => {
      const s = this.keeper.status();
      return refuse(
        `this host does not hold its cluster lease (lease ${s.mode}, etcd ${s.etcd}); it starts nothing until it does`,
      );
    };
    if (!this.keeper.held) throw notHeld();
    if (!fence)
      throw refuse(
        'the action carries no fencing token (in a cluster every start needs its owner record token)',
      );
    let kv: { value: Buffer; mod_revision: string } | undefined;
    try {
      // Linearizable (not serializable): answered only through etcd's leader, so without a quorum nothing starts.
      const r = await this.client.kv.range(
        { key: Buffer.from(clusterKeys.kv(ownerKey(vm))) },
        { deadline: Date.now() + ETCD_REQUEST_TIMEOUT_MS },
      );
      kv = r.kvs[0];
    } catch (e) {
      throw refuse(`its owner record cannot be read from etcd (${(e as Error).message})`);
    }
    if (!kv) throw refuse(`it has no owner record (token ${fence.token} expected)`);
    if (kv.value.length > ETCD_VALUE_MAX_BYTES)
      throw refuse(`its owner record is larger than ${ETCD_VALUE_MAX_BYTES} bytes`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(kv.value.toString('utf8'));
    } catch {
      throw refuse('its owner record is not JSON');
    }
    const rec = OwnerRecordSchema.safeParse(parsed);
    if (!rec.success) throw refuse(`its owner record is malformed (${rec.error.issues[0]?.message ?? '?'})`);
    if (rec.data.vm !== vm) throw refuse(`its owner record names VM ${rec.data.vm}`);
    if (rec.data.host !== this.host)
      throw refuse(
        `its owner record names host ${rec.data.host} (token ${kv.mod_revision}); this action carried token ${fence.token}`,
      );
    if (kv.mod_revision !== fence.token) {
      const older = compareTokens(fence.token, kv.mod_revision) < 0;
      throw refuse(
        `the action carried token ${fence.token} but the owner record (host ${rec.data.host}) holds token ${kv.mod_revision}${older ? ': a stale token' : ''}`,
      );
    }
    // The lease may have gone while etcd answered.
    if (!this.keeper.held) throw notHeld();
  }

  async ownedElsewhere(vms: readonly string[]): Promise<string[]> {
    const out: string[] = [];
    for (const vm of vms) {
      const r = await this.client.kv.range(
        { key: Buffer.from(clusterKeys.kv(ownerKey(vm))) },
        { deadline: Date.now() + ETCD_REQUEST_TIMEOUT_MS },
      );
      const kv = r.kvs[0];
      if (!kv || kv.value.length > ETCD_VALUE_MAX_BYTES) continue;
      let rec: ReturnType<typeof OwnerRecordSchema.safeParse>;
      try {
        rec = OwnerRecordSchema.safeParse(JSON.parse(kv.value.toString('utf8')));
      } catch {
        continue;
      }
      if (rec.success && rec.data.host !== this.host) out.push(vm);
    }
    return out;
  }

  /**
   * Whether the membership in etcd is another than the one last read whole: its revision only (keys only, a few
   * bytes). It is looked at after every renewal; at 1,000 hosts the value is ~50 KB, and read whole by every agent
   * each heartbeat it was most of etcd's work (and all of it in the simulated fleet, where one process reads for
   * every host). Both the look and the read wait this host's spread delay after the renewal (PeerCheck.refresh):
   * every agent reading a change at once starved etcd of renewals at 1,000 hosts, and the simulated fleet's renewals
   * fall together (1,000 looks in one burst were etcd's slowest requests). A change is read within two heartbeats.
   */
  private async membersChanged(): Promise<boolean> {
    const probe = await this.client.kv.range(
      { key: Buffer.from(clusterKeys.members), keys_only: true },
      { deadline: Date.now() + ETCD_REQUEST_TIMEOUT_MS },
    );
    const rev = probe.kvs[0]?.mod_revision;
    return rev !== undefined && rev !== this.membersRevision;
  }

  /** The membership as the controller wrote it (bounded, parsed); undefined when not written. */
  private async readMembers(): Promise<ClusterMembers | undefined> {
    const r = await this.client.kv.range(
      { key: Buffer.from(clusterKeys.members) },
      { deadline: Date.now() + ETCD_REQUEST_TIMEOUT_MS },
    );
    const kv = r.kvs[0];
    if (!kv) return undefined;
    if (kv.value.length > ETCD_VALUE_MAX_BYTES)
      throw new Error(`${clusterKeys.members} is larger than ${ETCD_VALUE_MAX_BYTES} bytes`);
    const members = ClusterMembersSchema.parse(JSON.parse(kv.value.toString('utf8')));
    this.membersRevision = kv.mod_revision;
    return members;
  }

  /** The keeper's etcd operations, each with its own short deadline. */
  private ops(): LeaseOps {
    const c = this.client;
    const opts = () => ({ deadline: Date.now() + this.leaseOpMs });
    const put = async (key: string, value: unknown, lease?: string) => {
      await c.kv.put(
        { key: Buffer.from(key), value: Buffer.from(JSON.stringify(value)), ...(lease ? { lease } : {}) },
        opts(),
      );
    };
    return {
      grant: async (ttlSeconds) => {
        const r = await c.leaseClient.leaseGrant({ TTL: ttlSeconds }, opts());
        if (r.error) throw new Error(`etcd refused a lease: ${r.error}`);
        return String(r.ID);
      },
      keepAlive: (id) => this.keepAliveOnce(id),
      putLiveness: (id, value: HostLeaseValue) => put(clusterKeys.hostLease(this.host), value, id),
      putFenceReport: (report: FenceReport) => put(clusterKeys.fenceReport(this.host), report),
      revoke: async (id) => {
        await c.leaseClient.leaseRevoke({ ID: id }, opts());
      },
      view: async (): Promise<EtcdView> => {
        try {
          const s = await c.maintenance.status(opts());
          return s.leader && s.leader !== '0' ? 'ok' : 'no-leader';
        } catch {
          return 'unreachable';
        }
      },
    };
  }

  /** One keepalive on its own stream, answered or abandoned within the lease operation deadline. */
  private keepAliveOnce(id: string): Promise<number> {
    const ms = this.leaseOpMs;
    return new Promise<number>((resolve, reject) => {
      let stream: Awaited<ReturnType<Etcd3['leaseClient']['leaseKeepAlive']>> | undefined;
      let done = false;
      const finish = (f: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        f();
      };
      const timer = setTimeout(() => {
        stream?.cancel();
        finish(() => reject(new Error(`etcd did not answer a keepalive within ${ms} ms`)));
      }, ms);
      timer.unref();
      this.client.leaseClient.leaseKeepAlive({ deadline: Date.now() + ms }).then(
        (s) => {
          stream = s;
          if (done) return s.cancel();
          s.on('data', (res) =>
            finish(() => {
              s.end();
              resolve(Number(res.TTL));
            }),
          );
          s.on('error', (err) => finish(() => reject(err)));
          s.write({ ID: id });
        },
        (err: Error) => finish(() => reject(err)),
      );
    });
  }
}
