// Admission of `hosts[].tuning`: each host's TCP tuning against what its agent reports it can set in its network
// namespace, so that a congestion control the kernel lacks (or does not allow there) is refused before any change.
import type { SpecIssue } from '../shared/errors.js';
import { TUNING_FIELDS, type TuningCapabilities, type TuningField } from '../shared/tuning.js';
import type { Spec } from './schema.js';
import { type HostTuningSpec, TUNING_SYSCTLS } from './schema-observe.js';

/** Why `caps` cannot take `want` (undefined when it can): a key its namespace lacks, or a congestion control. */
export function tuningRefusal(
  want: HostTuningSpec,
  caps: TuningCapabilities,
): { field: TuningField; why: string } | undefined {
  for (const f of TUNING_FIELDS)
    if (want[f] !== undefined && !caps.keys.includes(f))
      return { field: f, why: `its network namespace has no ${TUNING_SYSCTLS[f]} (an older kernel)` };
  const cc = want.congestion;
  if (cc === undefined || caps.congestion.includes(cc)) return undefined;
  const offers = `it can set ${caps.congestion.join(', ') || 'none'}`;
  const allowed = `net.ipv4.tcp_allowed_congestion_control: ${caps.congestionAllowed.join(' ') || 'none'}`;
  const why = caps.rootNamespace
    ? `its kernel has no congestion control ${cc} (not loaded, and no module tcp_${cc} to load); ${offers}`
    : caps.congestionAvailable.includes(cc)
      ? `congestion control ${cc} is loaded but not allowed outside the machine's root network namespace (${allowed}); ${offers}`
      : `congestion control ${cc} is not loaded, and outside the machine's root network namespace only loaded ones the machine allows can be set (${allowed}); ${offers}`;
  return { field: 'congestion', why };
}

/**
 * Checks every host's `tuning` against its agent's report: refused, naming the host and the reason, where the report
 * lacks a key or the congestion control, or where the agent reports no tuning at all. Hosts without a report are not
 * checked (they are unreachable: planning says so).
 */
export function checkTuning(
  spec: Spec,
  hosts: Record<string, { tuning?: TuningCapabilities | undefined }>,
): SpecIssue[] {
  const issues: SpecIssue[] = [];
  spec.hosts.forEach((h, i) => {
    const sup = hosts[h.name];
    if (!h.tuning || !sup) return;
    const refusal = sup.tuning
      ? tuningRefusal(h.tuning, sup.tuning)
      : { why: 'its agent reports no TCP tuning (an agent older than hosts[].tuning, or a storage host)' };
    if (refusal)
      issues.push({
        path: `hosts[${i}].tuning${'field' in refusal ? `.${refusal.field}` : ''}`,
        message: `host "${h.name}" cannot apply its tuning: ${refusal.why}`,
      });
  });
  return issues;
}
