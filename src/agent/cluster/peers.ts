// The outage check (docs/ha.md, "Losing etcd's quorum"): an agent that cannot renew its lease asks every other
// compute host's agent whether it can. Only when every peer answers, and none holds its lease, is the outage
// etcd's and not this host's own network: then the agent may keep its VMs (`hold`). Anything less fences.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import {
  type ClusterMembers,
  ClusterMembersSchema,
  type LeaseStatus,
  LeaseStatusSchema,
} from '../../shared/cluster.js';
import { HttpClient } from '../../shared/http/client.js';
import { PEER_LEASE_MAX_BYTES, PEER_LEASE_TIMEOUT_MS } from '../../shared/limits.js';
import { log } from '../../shared/log.js';
import { readJsonFileSync, writeJsonFile } from '../../shared/state-file.js';
import { peerMismatch, type TlsCredentials } from '../../shared/tls.js';
import { type Clock, type HoldVerdict, systemClock } from './lease-keeper.js';

/** The file (in the agent's state dir) that keeps the last membership read from etcd. */
export const MEMBERS_CACHE_FILE = 'cluster-members.json';

/**
 * How long host `host` waits, after a renewal, before it looks whether the membership changed and reads it: a
 * fraction of `windowMs` fixed by the host's name (sha256), so that the hosts of a cluster look and read spread
 * evenly over the window even when their renewals fall together (1,000 agents reading a 52 KB value within a second
 * starved etcd of lease renewals), and a host's delay is the same every time (no RNG to seed in tests).
 * In [0, windowMs).
 */
export function membersReadDelayMs(host: string, windowMs: number): number {
  if (!(windowMs > 0)) return 0;
  const h = createHash('sha256').update(host).digest().readUInt32BE(0);
  return Math.floor((h / 2 ** 32) * windowMs);
}

/** One peer as the membership names it. */
export type Peer = ClusterMembers['hosts'][number];

/** Options of `PeerCheck`. */
export interface PeerCheckOptions {
  /** This host (never asked). */
  host: string;
  /** The agent's state directory, where the last good membership is cached. */
  stateDir: string;
  /** Reads the membership from etcd (undefined: not written yet, or unchanged since the last read: keep it). */
  readMembers: () => Promise<ClusterMembers | undefined>;
  /** A cheap look (no value) at whether the membership in etcd differs from the one last read. Absent: always read. */
  changed?: () => Promise<boolean>;
  /**
   * The window over which the hosts of a cluster spread their looks and reads (ms; 0 or absent: at once): each
   * refresh first waits this host's `membersReadDelayMs` within it.
   */
  spreadMs?: number;
  /** The delay's timer (tests: a fake clock). */
  clock?: Clock;
  /** This host's credentials: peers are asked over mutual TLS with them (absent: only `http://` peers, tests). */
  tls?: TlsCredentials;
  /** Asks one peer for its lease (default: `GET /v1/cluster/lease` over mutual TLS). */
  ask?: (peer: Peer) => Promise<LeaseStatus>;
  timeoutMs?: number;
}

/** The membership cache and the outage check. */
export class PeerCheck {
  private members: ClusterMembers | undefined;
  private readonly file: string;
  private refreshing: Promise<void> | undefined;
  private readonly clients = new Map<string, HttpClient>();
  /** The spread delay running now, and what ends it (`stop`: without reading). */
  private waiting: { timer: unknown; wake: (read: boolean) => void } | undefined;

  constructor(private readonly opts: PeerCheckOptions) {
    this.file = join(opts.stateDir, MEMBERS_CACHE_FILE);
    try {
      this.members = readJsonFileSync(this.file, ClusterMembersSchema);
    } catch (e) {
      log.warn({ file: this.file, err: (e as Error).message }, 'cluster: ignoring a bad membership cache');
    }
  }

  /** The membership known now (etcd's last answer, else the cache on disk). */
  known(): ClusterMembers | undefined {
    return this.members;
  }

  /**
   * Reads the membership from etcd and caches it (memory and disk, atomically) when it changed. One read at a time;
   * a failure keeps the last good value. It first waits this host's spread delay (the refresh that waits is the one
   * in flight: later calls get it), then looks with `changed` and reads only a membership that moved. Nothing else
   * waits on it: the lease keeper calls it without awaiting, so a renewal never waits on a membership read.
   */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        if (!(await this.spreadDelay())) return;
        if (this.opts.changed && !(await this.opts.changed())) return;
        const m = await this.opts.readMembers();
        if (!m) return;
        if (JSON.stringify(m) === JSON.stringify(this.members)) return;
        this.members = m;
        await writeJsonFile(this.file, m, { mode: 0o644 });
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'cluster: cannot read the membership (keeping the last one)');
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** Ends a spread delay in progress without looking or reading (the agent stops; a later refresh starts afresh). */
  stop(): void {
    const w = this.waiting;
    if (!w) return;
    (this.opts.clock ?? systemClock).clearTimeout(w.timer);
    w.wake(false);
  }

  /** Waits this host's spread delay; resolves whether to read (false: stopped meanwhile). */
  private spreadDelay(): Promise<boolean> {
    const ms = membersReadDelayMs(this.opts.host, this.opts.spreadMs ?? 0);
    if (ms <= 0) return Promise.resolve(true);
    const clock = this.opts.clock ?? systemClock;
    return new Promise<boolean>((resolve) => {
      const wake = (read: boolean) => {
        this.waiting = undefined;
        resolve(read);
      };
      this.waiting = { timer: clock.setTimeout(() => wake(true), ms), wake };
    });
  }

  /** Asks every other compute host at once; the outage is proven iff all answered and none holds its lease. */
  async check(): Promise<HoldVerdict> {
    const m = this.members;
    if (!m) return { proven: false, reason: 'no cluster membership known: the outage cannot be proven' };
    const peers = m.hosts.filter((h) => h.name !== this.opts.host);
    const answers = await Promise.all(
      peers.map(async (p) => {
        try {
          const s = await this.ask(p);
          if (s.host !== p.name) return { p, bad: `answered as host ${JSON.stringify(s.host)}` };
          return { p, s };
        } catch (e) {
          return { p, bad: `did not answer (${(e as Error).message})` };
        }
      }),
    );
    const held = answers.find((a) => a.s?.mode === 'held');
    if (held)
      return {
        proven: false,
        heldPeer: held.p.name,
        reason: `host ${held.p.name} holds its lease (etcd answers it)`,
      };
    const bad = answers.find((a) => a.bad);
    if (bad) return { proven: false, reason: `host ${bad.p.name} ${bad.bad}` };
    const off = answers.find((a) => a.s?.mode === 'off');
    if (off) return { proven: false, reason: `host ${off.p.name} is not in the cluster (lease mode off)` };
    return {
      proven: true,
      reason: peers.length
        ? `every peer answered and none holds its lease: ${answers.map((a) => `${a.p.name} ${a.s!.mode}`).join(', ')}`
        : 'no other compute host: no VM of this host can start elsewhere',
    };
  }

  private ask(p: Peer): Promise<LeaseStatus> {
    if (this.opts.ask) return this.opts.ask(p);
    let c = this.clients.get(`${p.name} ${p.agent}`);
    if (!c) {
      const tls = this.opts.tls;
      // With TLS, a plain answer would let anyone on the path keep a partitioned host's VMs running: refused.
      if (tls ? !p.agent.startsWith('https://') : !p.agent.startsWith('http://'))
        return Promise.reject(
          new Error(
            `its address ${p.agent} is not ${tls ? 'https://' : 'http://'} (this agent ${tls ? 'speaks TLS' : 'has no certificate'})`,
          ),
        );
      c = new HttpClient(p.agent, {
        name: `agent of ${p.name}`,
        protocol: 'wire',
        maxResponseBytes: PEER_LEASE_MAX_BYTES,
        timeoutMs: this.opts.timeoutMs ?? PEER_LEASE_TIMEOUT_MS,
        ...(tls
          ? {
              tls: {
                ca: tls.ca,
                key: tls.key,
                cert: tls.cert,
                // The answer counts only from that host's own agent.
                checkPeer: (cert) => peerMismatch(cert, { role: 'host', name: p.name }),
              },
            }
          : {}),
      });
      this.clients.set(`${p.name} ${p.agent}`, c);
    }
    // `verify`: the peer renews before it answers `held` (it may not have tried etcd since etcd went down).
    return c.get('/v1/cluster/lease?verify=1', LeaseStatusSchema);
  }
}
