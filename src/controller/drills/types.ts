// What a drill runner needs, as small ports: the lab's faults, the cluster as its controllers' API shows it, and
// the outside sampler. The controller wires the real ones (control.ts); unit tests wire fakes that follow a script.
import type { DrillKind, DrillReport } from '../../shared/cluster.js';
import type { Spec } from '../../spec/schema.js';
import type { Sampler } from './sampler.js';

/** Failures a drill injects, and their repair (lab/faults.ts, lab/etcd.ts, lab/cluster.ts). */
export interface DrillFaults {
  /** SIGKILL the host's agent and every QEMU of its VMs at once; resolves with when (ms since the epoch). */
  killHost(host: string): Promise<{ at: number; vms: string[] }>;
  /** Starts the host's agent again (the lab's own start path). */
  restartAgent(host: string): Promise<void>;
  /** Cuts the host off the LAN; its agent and VMs keep running. */
  partitionHost(host: string): Promise<{ at: number }>;
  healPartition(host: string): Promise<void>;
  /** SIGKILL a cluster controller by its lab name. */
  killController(name: string): Promise<{ at: number }>;
  /** Starts it again (as a standby, until an election says otherwise); resolves once it answers. */
  restartController(name: string): Promise<void>;
  stopEtcdMember(name: string): Promise<{ at: number }>;
  startEtcdMember(name: string): Promise<void>;
}

/** The active controller, as `GET /v1/cluster` names it. */
export interface ActiveController {
  name: string;
  pid?: number;
}

/** An event of the cluster's log. */
export interface ClusterEvent {
  id: number;
  /** ISO time. */
  time: string;
  kind: string;
  message: string;
}

/** A started apply on the cluster. */
export interface ApplyRun {
  /** Resolves with how it ended; `lost` when its controller stopped answering before it ended. */
  done: Promise<'succeeded' | 'failed' | 'cancelled' | 'lost'>;
  /** Resolves once the task reported its first progress line (the apply is under way). */
  started: Promise<void>;
}

/** The cluster as its controllers' API shows it (any controller answers reads; changes go to the active one). */
export interface ClusterPort {
  /** The active controller now; undefined when none answers as active. */
  active(): Promise<ActiveController | undefined>;
  /** Hosts holding a lease now; undefined when no controller answered. */
  liveHosts(): Promise<string[] | undefined>;
  /** etcd members and their health; undefined when no controller answered. */
  members(): Promise<Array<{ name: string; healthy: boolean }> | undefined>;
  /** The newest `limit` events. */
  events(limit: number): Promise<ClusterEvent[]>;
  /** Whether VM `vm`'s guest agent answers (a `true` run in the guest) within `timeoutMs`. */
  guestAnswers(vm: string, timeoutMs: number): Promise<boolean>;
  /** The plan of the drill's spec now: its step count and text. */
  plan(): Promise<{ steps: number; text: string }>;
  /** Starts an apply of the drill's spec on the active controller. */
  startApply(): Promise<ApplyRun>;
  /**
   * iSCSI volumes whose target has sessions from more than one initiator address now, from the storage hosts'
   * reports (the target side of "no disk with two writers"); absent where the cluster cannot say.
   */
  iscsiTwoWriters?(): Promise<Array<{ pool: string; volume: string; addresses: string[] }>>;
}

/** Everything a drill runner uses. */
export interface DrillEnv {
  /** The spec the cluster runs (placed or not: `vms[].host` may be empty; the sampler says where VMs run). */
  spec: Spec;
  faults: DrillFaults;
  cluster: ClusterPort;
  sampler: Sampler;
  /** Progress lines (the task's). */
  progress: (line: string) => void;
  signal?: AbortSignal;
  /** Time limits (tests shorten them). */
  timing: DrillTiming;
  options: DrillOptions;
}

/** What a drill request may add to its kind and target. */
export interface DrillOptions {
  /** controller-failure: kill the active controller while it applies the spec (the next apply must converge). */
  duringApply?: boolean;
}

/** A drill's time limits and polling periods (milliseconds). */
export interface DrillTiming {
  /** Longest wait for detection, a restart, a guest, a takeover. */
  recoveryMs: number;
  /** Longest wait for the cluster to be healthy again after the repair, and for a plan to come out empty. */
  restoreMs: number;
  /** Between two looks at the cluster (leases, members, the active controller). */
  pollMs: number;
  /** etcd-member-failure: how long the cluster is watched with the member down (a lease's TTL and more). */
  outageMs: number;
}

/** One kind of drill. */
export type DrillRunner = (env: DrillEnv, target: string) => Promise<DrillReport>;

/** Drill runners by kind. */
export type DrillRunners = Record<DrillKind, DrillRunner>;
