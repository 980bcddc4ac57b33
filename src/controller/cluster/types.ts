// What the controller needs from the cluster's coordination service beyond the Store: host leases (liveness), the
// active controller's election, and etcd's own health. One implementation, on etcd (etcd-coordination.ts).
import type { HostLeaseValue } from '../../shared/cluster.js';

/** A host whose lease is alive, as etcd holds it. */
export interface LiveHost {
  host: string;
  value: HostLeaseValue;
  /** When this controller first saw this lease (ms since epoch, its own clock): the lease's age for targets. */
  seenAt: number;
}

/** A controller process, as the election and `GET /v1/cluster` show it. */
export interface ControllerInfo {
  /** Unique per process: `<name>/<pid>/<random>`. */
  id: string;
  /** A short name (`ctl1`), from `vmlink daemon --name`. */
  name: string;
  /** Where clients reach it: `unix:///path.sock` or `https://addr:port`. */
  address: string;
  /**
   * Its TCP listener (`https://addr:port`) when it has one besides the unix socket in `address`: a standby names
   * this one to clients that came over TCP, and `address` to those on a socket.
   */
  tcp?: string;
  /** When it started (ISO). */
  since: string;
}

/** An etcd member as a controller sees it. */
export interface EtcdMemberView {
  name: string;
  endpoint: string;
  healthy: boolean;
  /** Whether it reports a leader; absent when it did not answer. */
  hasLeader?: boolean;
  isLeader?: boolean;
  error?: string;
}

/** A running campaign for the active role. */
export interface Campaign {
  /** Steps down (a standby again) and stops campaigning. */
  resign(): Promise<void>;
}

/** Calls made by a campaign as its fortunes change. */
export interface CampaignEvents {
  /** This controller became the active one. */
  elected(): void;
  /** It lost the role (its election lease ended, etcd unreachable too long): stop acting at once. */
  lost(reason: string): void;
}

/** Host liveness, the election and etcd's health. */
export interface Coordination {
  /** Hosts whose lease key exists now. */
  liveHosts(): Promise<LiveHost[]>;
  /** Calls `onChange` with every live host whenever the set changes (and once at start); returns a stopper. */
  watchHosts(onChange: (hosts: LiveHost[]) => void): () => void;
  /** Campaigns for the active role until resigned or closed. */
  campaign(self: ControllerInfo, events: CampaignEvents): Campaign;
  /** The active controller now, if any. */
  activeController(): Promise<ControllerInfo | undefined>;
  /** Every etcd member's health, as this controller reaches them. */
  members(): Promise<EtcdMemberView[]>;
  /** Releases the connection (and resigns). */
  close(): Promise<void>;
}

/** A part of the controller that runs on the active controller only (heartbeats, the HA manager, schedules). */
export interface ActiveService {
  /** A name for logs. */
  readonly name: string;
  /** Starts working (this controller just became active). */
  start(): void;
  /** Stops at once (this controller is no longer active, or exits); resolves when nothing more will be done. */
  stop(): Promise<void>;
}
