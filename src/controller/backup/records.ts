// What the backup side keeps in the controller's store: VMs made by `restore --as` (apply leaves them alone), each
// policy's schedule state (survives restarts and takeovers), the measured RTO per policy and VM, and the objectives'
// last states (so a restart does not repeat a drift event).
import type { ObjectiveStatus, SnapshotId } from '../../shared/backup.js';
import type { Store } from '../store/types.js';

/** A VM made by `restore --as`: the planner leaves it alone until `vmlink restore discard NAME`. */
export interface RestoredVmRecord {
  name: string;
  host: string;
  snapshot: SnapshotId;
  store: string;
  at: string;
  /** Made by a restore test (deleted by it; a leftover is cleaned at the next test). */
  test?: true;
}

/** A policy's schedule state. */
export interface ScheduleState {
  /** When the last scheduled run started (ISO): the schedule counts from here. */
  lastRunAt?: string;
  lastOutcome?: 'succeeded' | 'failed';
  /** The first failure's message of the last run (VMs that failed, and why). */
  lastError?: string;
  /** When the last restore test started (ISO). */
  lastRestoreTestAt?: string;
}

/** A restore test's measured time for one VM of a policy. */
export interface RtoRecord {
  policy: string;
  vm: string;
  snapshot?: SnapshotId;
  ok: boolean;
  /** Restore start to the guest agent answering. */
  seconds?: number;
  at: string;
  error?: string;
}

export const restoredKey = (name: string) => `backup/restored/${name}`;
export const scheduleKey = (policy: string) => `backup/schedules/${policy}`;
export const rtoKey = (policy: string, vm: string) => `backup/rto/${policy}/${vm}`;
export const objectiveKey = (policy: string, vm: string) => `backup/objectives/${policy}/${vm}`;

/** The state kept per objective to notice changes. */
export interface ObjectiveStates {
  rpo: ObjectiveStatus['rpo']['state'];
  rto: ObjectiveStatus['rto']['state'];
  rule: ObjectiveStatus['rule']['state'];
  /** The objective's whole state: ok unless one is in drift. */
  overall: 'ok' | 'drift' | 'unknown';
}

/** Every VM made by `restore --as`, by name. */
export async function restoredVms(store: Store): Promise<RestoredVmRecord[]> {
  return (await store.list<RestoredVmRecord>(restoredKey(''))).map((r) => r.value);
}

/** Whether `vm` on `host` is a VM made by `restore --as` (the planner's deletions skip it). */
export async function restoredVmSet(store: Store): Promise<(vm: string, host: string) => boolean> {
  const all = await restoredVms(store);
  const set = new Set(all.map((r) => `${r.host}/${r.name}`));
  return (vm, host) => set.has(`${host}/${vm}`);
}
