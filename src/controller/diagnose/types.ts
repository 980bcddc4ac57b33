// What every diagnosis reads (one pure module per DIAGNOSIS_IDS entry beside this file): the applied spec as each
// host must realise it, what each asked host answered (observations, capability report) or why it did not, its
// heartbeat record, the storage doctor's checks, and the metric history where the controller collects metrics.
import type { DoctorCheck } from '../../agent/wire-doctor.js';
import type { DesiredState } from '../../plan/resolve.js';
import type { MetricsSource } from '../../shared/metrics.js';
import type { HostReport } from '../../shared/model.js';
import type { Spec } from '../../spec/schema.js';
import type { AgentDoctorAnswer } from '../agents.js';
import type { HostHealth } from '../monitor.js';
import type { Diagnosis } from '../wire-observe.js';

/** One spec host as the doctor saw it. */
export interface HostFacts {
  host: string;
  /** Its agent's doctor answer; absent when it did not answer (`error` says why). */
  answer?: AgentDoctorAnswer;
  error?: string;
  /** Its capability report (absent when it did not answer). */
  report?: HostReport;
  /** The heartbeat monitor's record (absent before the first heartbeat or without a daemon). */
  health?: HostHealth;
}

/** Everything the diagnoses read. */
export interface DiagnoseInput {
  spec: Spec;
  /** `resolveSpec(spec)`: each host's networks and VMs as it must realise them. */
  desired: DesiredState;
  /** The hosts asked (all, or the one `?host=` names). */
  hosts: readonly HostFacts[];
  /** The storage doctor's checks (those of the asked hosts). */
  storage: readonly DoctorCheck[];
  /** The controller's metric history; absent where it collects none. */
  metrics?: MetricsSource;
  /** The controller's clock (epoch ms). */
  now: number;
}

/** One case of the doctor: what it finds wrong in the input (nothing: an empty list). */
export type Diagnose = (input: DiagnoseInput) => Diagnosis[];
