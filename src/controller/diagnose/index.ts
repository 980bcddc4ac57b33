// The doctor's diagnoses: one pure module per case of DIAGNOSIS_IDS, run in that order over the same input.
import type { Diagnosis, DiagnosisId } from '../wire-observe.js';
import { agentUnreachable } from './agent-unreachable.js';
import { clockDrift } from './clock-drift.js';
import { guestMemoryGrowth } from './guest-memory-growth.js';
import { kernelFeatureMissing } from './kernel-feature-missing.js';
import { overlayMtu } from './overlay-mtu.js';
import { storagePathDown } from './storage-path-down.js';
import { stpBlocking } from './stp-blocking.js';
import type { Diagnose, DiagnoseInput } from './types.js';
import { vlanNotOnTrunk } from './vlan-not-on-trunk.js';

export type { DiagnoseInput, HostFacts } from './types.js';

/** Every case, by id (the record's type makes a new DIAGNOSIS_IDS entry without a module a compile error). */
export const DIAGNOSES: Record<DiagnosisId, Diagnose> = {
  'stp-blocking': stpBlocking,
  'vlan-not-on-trunk': vlanNotOnTrunk,
  'overlay-mtu': overlayMtu,
  'storage-path-down': storagePathDown,
  'guest-memory-growth': guestMemoryGrowth,
  'kernel-feature-missing': kernelFeatureMissing,
  'agent-unreachable': agentUnreachable,
  'clock-drift': clockDrift,
};

/** Every diagnosis of the input, critical ones first (then in DIAGNOSIS_IDS order). */
export function diagnose(input: DiagnoseInput): Diagnosis[] {
  // The wire bounds evidence (DiagnosisSchema): a case with more keeps its first lines.
  const all = Object.values(DIAGNOSES)
    .flatMap((d) => d(input))
    .map((d) => ({ ...d, evidence: d.evidence.slice(0, 32) }));
  return [...all.filter((d) => d.severity === 'critical'), ...all.filter((d) => d.severity !== 'critical')];
}
