// The messages between the simulator's main thread (lease-thread.ts) and its lease thread (lease-worker.ts). Both
// ends are this process's own code: typed, not parsed.
import type { Fence } from '../agent/wire.js';
import type { LeaseStatus } from '../shared/cluster.js';
import type { ErrorBody } from '../shared/errors.js';

/** How often the lease thread sends the statuses that changed (the main thread's `status()` is at most this old). */
export const LEASE_STATUS_PUSH_MS = 200;

/** The lease thread's `workerData`. */
export interface LeaseThreadData {
  etcd: string[];
  heartbeatSeconds: number;
  /** Shared etcd connections; hosts are spread over them. */
  connections: number;
}

/** Main thread -> lease thread. Each `id` is answered by one `reply`. */
export type ToWorker =
  | { op: 'add'; id: number; host: string; stateDir: string; own: boolean }
  | { op: 'start' | 'stop' | 'cut'; id: number; host: string }
  | { op: 'verified'; id: number; host: string; boundMs: number }
  | { op: 'assertOwner'; id: number; host: string; vm: string; fence: Fence | undefined }
  | { op: 'ownedElsewhere'; id: number; host: string; vms: string[] }
  | { op: 'close'; id: number }
  /** The answer to a `fence` request (no reply). */
  | { op: 'fenced'; id: number; vms?: string[]; error?: string };

/** Lease thread -> main thread. */
export type ToMain =
  | { kind: 'ready' }
  | { kind: 'reply'; id: number; value?: unknown; error?: ErrorBody }
  /** The statuses that changed since the last push. */
  | { kind: 'status'; statuses: LeaseStatus[] }
  /** A host's keeper fences: the main thread's agent stops its VMs and answers with `fenced`. */
  | { kind: 'fence'; id: number; host: string; reason: string };
