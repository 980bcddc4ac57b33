// The agent's part of the cluster: its lease in etcd, the watchdog that fences its VMs when the lease cannot be
// renewed, and the ownership check before a VM starts or its disks open. One implementation on etcd (membership.ts).
import type { LeaseStatus } from '../../shared/cluster.js';
import type { Fence } from '../wire.js';

/** What the agent does when its membership tells it to fence: stop these VMs at once (no guest shutdown). */
export type FenceVms = (reason: string) => Promise<string[]>;

/** An agent's membership in a cluster. */
export interface ClusterMembership {
  /** Grants the lease, writes the host's liveness key and starts renewing; resolves once the lease is held. */
  start(): Promise<void>;
  /** Stops renewing and revokes the lease (a clean agent stop: the host goes `failed` at once, VMs keep running). */
  stop(): Promise<void>;
  /** The lease as this agent sees it now. */
  status(): LeaseStatus;
  /**
   * The lease after making sure (a renewal now, bounded by `boundMs`, unless one was just confirmed): what a peer's
   * outage check is told. A lease still `held` here was renewed within `boundMs` or its renewal has not failed yet.
   */
  verifiedStatus(boundMs: number): Promise<LeaseStatus>;
  /**
   * Throws `FencedError` (shared/errors) unless this host holds its lease and etcd's owner record of `vm` names
   * this host with `fence.token` (a linearizable read: without etcd's quorum nothing starts).
   */
  assertOwner(vm: string, fence: Fence | undefined): Promise<void>;
  /**
   * Of `vms` (running here), those whose owner record names another host: started elsewhere while this agent was
   * away (its lease ended). A VM without a record is not named. Throws when etcd cannot be read.
   */
  ownedElsewhere(vms: readonly string[]): Promise<string[]>;
}
