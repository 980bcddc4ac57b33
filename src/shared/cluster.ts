// The cluster's shared contract: etcd's key layout, owner records with their fencing tokens, what an agent says of
// its lease, HA policies, the HA manager's decisions and the drills' reports. Controller, agent, CLI and lab use it.
import { z } from 'zod';

// ---------------------------------------------------------------------------------------------------------------
// Timing. With the seed's 5 s heartbeats: a 10 s lease, renewed every 5 s (retried every 500 ms after a failure),
// and an agent that has not renewed fences itself 2 s before its lease can end.

/** Default heartbeat: how often an agent renews its etcd lease. */
export const CLUSTER_HEARTBEAT_S_DEFAULT = 5;
/** A host lease lives this many heartbeats: its key disappears that long after the last renewal at most. */
export const LEASE_TTL_HEARTBEATS = 2;
/** After a failed renewal an agent tries again this often until it renews or fences. */
export const LEASE_RETRY_MS = 500;
/**
 * An agent that could not renew stops its VMs this long before its lease could end (measured from the moment it
 * sent its last renewal that etcd confirmed, so etcd's own expiry is later still).
 */
export const FENCE_MARGIN_MS = 2_000;
/** A surviving host counts as a restart target only once its lease is this old (see docs/ha.md, "etcd outage"). */
export const TARGET_LEASE_MIN_AGE_MS = 3_000;
/** How often an agent in `hold` asks its peers whether they still cannot reach etcd either. */
export const HOLD_PEER_CHECK_MS = 1_000;

/** The lease TTL (seconds) for a heartbeat of `heartbeatSeconds`. */
export const leaseTtlSeconds = (heartbeatSeconds: number): number => heartbeatSeconds * LEASE_TTL_HEARTBEATS;

// ---------------------------------------------------------------------------------------------------------------
// etcd's key layout. Everything vmlink writes lives below ETCD_PREFIX; etcd's roles
// (controller/cluster/etcd-auth.ts) give a host's agent write access to its own lease key and fence report only, and
// read access to owner records and the membership.

/** etcd keys below this prefix belong to vmlink. */
export const ETCD_PREFIX = '/vmlink/';

/** Where each kind of record lives in etcd. */
export const clusterKeys = {
  /** The Store interface's key `key` (store/etcd.ts): owner records are Store keys too (`owners/<vm>`). */
  kv: (key: string): string => `${ETCD_PREFIX}kv/${key}`,
  /** Prefix of every Store key. */
  kvPrefix: `${ETCD_PREFIX}kv/`,
  /** The event log (`events/<16-digit sequence>`) and its sequence counter. */
  eventsPrefix: `${ETCD_PREFIX}events/`,
  /** The audit trail (`audit/<16-digit sequence>`). */
  auditPrefix: `${ETCD_PREFIX}audit/`,
  /** A host's liveness key, attached to its agent's lease; written only by that host (etcd user = host name). */
  hostLease: (host: string): string => `${ETCD_PREFIX}leases/hosts/${host}`,
  /** Prefix of every host's liveness key. */
  hostLeasePrefix: `${ETCD_PREFIX}leases/hosts/`,
  /** A host's last fence report (`FenceReport`), written by its agent. */
  fenceReport: (host: string): string => `${ETCD_PREFIX}fence/${host}`,
  /** The active controller's election (etcd3's election API keeps its candidates below this prefix). */
  election: `${ETCD_PREFIX}election/controller`,
  /** The cluster's membership as agents need it (`ClusterMembers`): written by the active controller at apply. */
  members: `${ETCD_PREFIX}cluster/members`,
} as const;

/** Store key (not etcd key) of a VM's owner record. */
export const ownerKey = (vm: string): string => `owners/${vm}`;
/** Store prefix of every owner record. */
export const OWNER_PREFIX = 'owners/';
/** Store key of a host's maintenance flag (`MaintenanceRecord`). */
export const maintenanceKey = (host: string): string => `maintenance/${host}`;
/** Store key of a VM stopped by a user (`UserStopRecord`): HA never starts it again until a user does. */
export const userStopKey = (vm: string): string => `ha/user-stopped/${vm}`;

/** etcd user names that a host may not take (its certificate's CN is its etcd user). */
export const RESERVED_ETCD_USERS = ['root', 'vmlink-controller'] as const;

// ---------------------------------------------------------------------------------------------------------------
// Records.

/** A fencing token: the store version (etcd: mod revision) at which an owner record was written. */
export const FencingTokenSchema = z
  .string()
  .regex(/^[1-9]\d{0,19}$/, 'must be a store version (1-20 digits)');
/** A fencing token (decimal; etcd revisions are 64-bit, so never a JS number). */
export type FencingToken = z.infer<typeof FencingTokenSchema>;

/** Which of two tokens is newer: negative when `a` is older than `b`. */
export function compareTokens(a: FencingToken, b: FencingToken): number {
  const d = BigInt(a) - BigInt(b);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

/**
 * Why a VM got its current owner. `restore`: a copy made by `vmlink restore --as` or a restore test (no spec VM;
 * apply leaves its record alone).
 */
export const OwnerReasons = ['spec', 'scheduler', 'ha-restart', 'maintenance', 'user', 'restore'] as const;

/** A VM's owner record (Store key `owners/<vm>`): the one host that may run it. Its token is the record's version. */
export const OwnerRecordSchema = z
  .object({
    vm: z.string(),
    host: z.string(),
    /** The spec's `host` of the VM when this record was written (absent: the spec names none, the scheduler chose). */
    specHost: z.string().optional(),
    reason: z.enum(OwnerReasons),
    /** When it was written (ISO). */
    since: z.string(),
    /** The host it ran on before, for HA restarts and moves. */
    from: z.string().optional(),
  })
  .strict();
/** A VM's owner record as stored. */
export type OwnerRecord = z.infer<typeof OwnerRecordSchema>;
/** An owner record with its fencing token. */
export interface OwnedVm extends OwnerRecord {
  token: FencingToken;
}

/** A host's liveness value, under its lease key. */
export const HostLeaseValueSchema = z
  .object({
    host: z.string(),
    /** The agent's lease id (decimal). */
    leaseId: z.string(),
    /** When this lease was granted (ISO, the agent's clock). */
    since: z.string(),
    heartbeatSeconds: z.number().int().positive(),
  })
  .strict();
/** What a host's lease key holds. */
export type HostLeaseValue = z.infer<typeof HostLeaseValueSchema>;

/** What an agent writes when it fences itself (`clusterKeys.fenceReport`), once it can write again. */
export const FenceReportSchema = z
  .object({
    host: z.string(),
    /** When it stopped its VMs (ISO). */
    at: z.string(),
    reason: z.string(),
    vms: z.array(z.string()),
  })
  .strict();
/** A host's fence report. */
export type FenceReport = z.infer<typeof FenceReportSchema>;

/** A host put in maintenance by `vmlink host maintenance HOST on`. */
export interface MaintenanceRecord {
  host: string;
  since: string;
  /** Who asked (the API principal's name). */
  by: string;
}

/** A VM a user stopped (`vmlink vm stop`): HA leaves it stopped. */
export interface UserStopRecord {
  vm: string;
  at: string;
  by: string;
}

/** The membership agents read from etcd: their peers (for the outage check) and the heartbeat. */
export const ClusterMembersSchema = z
  .object({
    heartbeatSeconds: z.number().int().positive(),
    /** Compute hosts and where their agents answer peers (`https://addr:port`, mutual TLS with host certificates). */
    hosts: z.array(z.object({ name: z.string(), agent: z.string() }).strict()).max(4096),
  })
  .strict();
/** The cluster's membership as agents read it. */
export type ClusterMembers = z.infer<typeof ClusterMembersSchema>;

// ---------------------------------------------------------------------------------------------------------------
// An agent's lease, as it reports it (`GET /v1/cluster/lease`, to the controller and to peer hosts).

/**
 * - `off`: no cluster configured; the agent starts VMs on the controller's word alone (single controller).
 * - `held`: the lease was renewed within the last heartbeat or so; VMs may start (with a current token).
 * - `renewing`: renewals fail; `deadline` is when the agent fences unless one succeeds or the outage is proven
 *   cluster-wide.
 * - `hold`: etcd is down for every host (each peer answered that it cannot renew either): running VMs are kept,
 *   nothing starts; the agent fences the moment a peer renews while it still cannot.
 * - `fenced`: the agent stopped its VMs; it starts nothing until it holds a new lease.
 */
export const LeaseModes = ['off', 'held', 'renewing', 'hold', 'fenced'] as const;
/** One of `LeaseModes`. */
export type LeaseMode = (typeof LeaseModes)[number];

/** How an agent sees etcd: answering with a leader, answering without one, or not at all. */
export const EtcdViews = ['ok', 'no-leader', 'unreachable'] as const;

/** An agent's lease status. */
export const LeaseStatusSchema = z
  .object({
    host: z.string(),
    mode: z.enum(LeaseModes),
    etcd: z.enum(EtcdViews),
    leaseId: z.string().optional(),
    /** When the last renewal etcd confirmed was sent (ISO). */
    lastRenewal: z.string().optional(),
    /** When the agent fences if nothing changes (ISO), in `renewing`. */
    deadline: z.string().optional(),
    /** The last time the agent fenced itself, and the VMs it stopped. */
    fencedAt: z.string().optional(),
    fencedVms: z.array(z.string()).max(4096).default([]),
    heartbeatSeconds: z.number().int().positive().optional(),
  })
  .strict();
/** An agent's lease status. */
export type LeaseStatus = z.infer<typeof LeaseStatusSchema>;

// ---------------------------------------------------------------------------------------------------------------
// HA decisions: what the HA manager decided and why. Each one is also an event (`ha.<kind>`).

/** The kinds of HA decisions. */
export const HaDecisionKinds = [
  'host-failed',
  'host-recovered',
  'restart',
  'move',
  'place',
  'wait',
  'no-capacity',
  'keep-stopped',
] as const;

/** One HA decision: its kind, the VM and hosts it concerns, and its reason in words. */
export const HaDecisionSchema = z
  .object({
    kind: z.enum(HaDecisionKinds),
    /** Milliseconds since the decision engine's epoch (a fake clock in tests), or ISO in events. */
    at: z.union([z.number(), z.string()]),
    vm: z.string().optional(),
    host: z.string().optional(),
    from: z.string().optional(),
    to: z.string().optional(),
    reason: z.string(),
  })
  .strict();
/** One HA decision. */
export type HaDecision = z.infer<typeof HaDecisionSchema>;

// ---------------------------------------------------------------------------------------------------------------
// Drills.

/** The failures a drill injects. */
export const DrillKinds = ['host-failure', 'partition', 'controller-failure', 'etcd-member-failure'] as const;
/** One of `DrillKinds`. */
export type DrillKind = (typeof DrillKinds)[number];

/** One invariant a drill checked from outside, with what it saw. */
export const DrillInvariantSchema = z
  .object({
    name: z.enum([
      'no-vm-twice',
      'none-lost',
      'no-disk-two-writers',
      'converged',
      'nothing-started-without-owner',
      // etcd-member-failure: every host kept its lease, and the store took writes, while the member was down.
      'no-host-failed',
      'store-writes',
    ]),
    ok: z.boolean(),
    detail: z.string(),
  })
  .strict();

/** A VM's recovery in a drill. */
export const DrillVmSchema = z
  .object({
    vm: z.string(),
    from: z.string(),
    to: z.string().optional(),
    /** Seconds from the injected failure until its QEMU ran on `to` (absent: it did not). */
    restartedS: z.number().optional(),
    /** Seconds from the injected failure until its guest agent answered there. */
    guestAnswersS: z.number().optional(),
    /** partition: seconds from the cut until its QEMU on `from` was gone (the isolated host's self-fence). */
    stoppedS: z.number().optional(),
  })
  .strict();

/** What `vmlink drill` reports. */
export const DrillReportSchema = z
  .object({
    kind: z.enum(DrillKinds),
    target: z.string(),
    startedAt: z.string(),
    /** Seconds until the failure was detected (host failed, controller took over, member reported down). */
    detectedS: z.number().optional(),
    /** controller-failure: seconds until a standby was active. */
    takeoverS: z.number().optional(),
    vms: z.array(DrillVmSchema),
    invariants: z.array(DrillInvariantSchema),
    /** How often the outside sampler looked at every host's QEMU processes, and how many samples it took. */
    samples: z.object({ everyMs: z.number(), count: z.number() }).strict(),
    /** Whether the lab was put back (agent restarted, link restored, member restarted). */
    restored: z.boolean(),
    notes: z.array(z.string()).default([]),
  })
  .strict();
/** A drill's report. */
export type DrillReport = z.infer<typeof DrillReportSchema>;
