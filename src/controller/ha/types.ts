// The HA manager's decision engine, as data: what it is told each round, what it remembers, what it decides.
// decide.ts is pure (a clock in the inputs, no I/O): the same inputs give the same decisions, so its tests replay
// failures with a fake clock against golden decision logs. manager.ts gathers the inputs and carries out the actions.
import type { FencingToken, HaDecision } from '../../shared/cluster.js';
import type { HaPolicy } from '../../spec/schema.js';

/** A host as the engine sees it this round. */
export interface HaHostInput {
  name: string;
  /** Its lease exists now. */
  live: boolean;
  /** How long this controller has seen its current lease (ms); absent when not live. */
  leaseAgeMs?: number;
  /** `vmlink host maintenance HOST on`. */
  maintenance: boolean;
  /** What VMs may use on it (the spec's `capacity`, else the agent's report). */
  capacity: { cpus: number; memoryMiB: number };
}

/** A VM as the engine sees it this round. */
export interface HaVmInput {
  name: string;
  /** Its HA policy; undefined = not protected (`disabled`). */
  policy: HaPolicy | undefined;
  cpus: number;
  memoryMiB: number;
  /** Its owner record, if any. */
  owner?: { host: string; token: FencingToken };
  /** Stopped by a user (`vmlink vm stop`): HA leaves it stopped. */
  userStopped: boolean;
}

/** Everything one round of `decide` looks at. */
export interface HaInputs {
  /** The clock (ms). */
  now: number;
  hosts: HaHostInput[];
  vms: HaVmInput[];
  /** `cluster.admission.hostFailures`. */
  admissionHostFailures: number;
}

/** What the engine remembers between rounds (the manager keeps it in memory; a new active starts empty). */
export interface HaMemory {
  /** Per host: its state as the engine last saw it, since when (ms), and when it failed recently (flap damping). */
  hosts: Record<
    string,
    {
      state: 'up' | 'failed';
      since: number;
      failures: number[];
      /** The last round it was live (ms), for `host-failed`'s "last seen". */
      seenAt?: number;
    }
  >;
  /**
   * Per VM: the signature of the last standing decision said about it (`wait`, `no-capacity`, `keep-stopped`), so
   * that one is said once per VM per failure, not every round. Absent: nothing said yet.
   */
  vms?: Record<string, { said: string }>;
}

/** Something the manager must do. */
export type HaAction =
  /**
   * Give `vm` to `to` (compare-and-set on `expected`, its token read this round), then start it there when its
   * policy says `started`: the manager reconciles the target host (create, ports, start) under the new token.
   */
  | { kind: 'assign'; vm: string; to: string; from?: string; expected: FencingToken | null; start: boolean }
  /** Stop `vm` on `host` first (maintenance drain), then assign it (a later round sees it stopped). */
  | { kind: 'stop'; vm: string; host: string };

/** One round's result. */
export interface HaRound {
  memory: HaMemory;
  /** In the order they were made; each is also an event `ha.<kind>`. */
  decisions: HaDecision[];
  actions: HaAction[];
}

/** The engine: one round. */
export type DecideFn = (memory: HaMemory, inputs: HaInputs) => HaRound;
