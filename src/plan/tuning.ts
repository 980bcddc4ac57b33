// Host tuning in the plan (docs/observability.md, "Host tuning"): the fields of `hosts[].tuning` whose observed
// value differs from the spec become one commit-confirmed `tuning.configure` step, first on its host. Pure.
import { TUNING_FIELDS, type TuningCapabilities } from '../shared/tuning.js';
import type { Spec } from '../spec/schema.js';
import type { HostTuningSpec } from '../spec/schema-observe.js';
import type { TuningConfigureStep } from './steps.js';

/** Desired tuning of every spec host, keyed by host name; undefined where `hosts[].tuning` is not set. */
export type DesiredTunings = Record<string, HostTuningSpec | undefined>;

/** `hosts[].tuning` of every host of `spec`. */
export function resolveTunings(spec: Spec): DesiredTunings {
  return Object.fromEntries(spec.hosts.map((h) => [h.name, h.tuning ? { ...h.tuning } : undefined]));
}

/** The fields of `want` the host does not have (all of them when it reports no tuning), as `want` orders them. */
export function tuningDrift(want: HostTuningSpec, seen: TuningCapabilities | undefined): HostTuningSpec {
  const out: HostTuningSpec = {};
  for (const f of TUNING_FIELDS)
    if (want[f] !== undefined && seen?.current[f] !== want[f]) Object.assign(out, { [f]: want[f] });
  return out;
}

/** `congestion bbr -> reno` per drifting field (`? ->` where the host does not report the value). */
export function tuningChanges(drift: HostTuningSpec, seen: TuningCapabilities | undefined): string[] {
  return TUNING_FIELDS.filter((f) => drift[f] !== undefined).map(
    (f) => `${f} ${seen?.current[f] ?? '?'} -> ${drift[f]}`,
  );
}

/**
 * The step that brings `host`'s tuning to `want` (only the drifting fields, commit-confirmed within
 * `confirmTimeoutMs`), or undefined when it has it already.
 */
export function planTuning(
  host: string,
  want: HostTuningSpec,
  seen: TuningCapabilities | undefined,
  confirmTimeoutMs: number,
): TuningConfigureStep | undefined {
  const drift = tuningDrift(want, seen);
  if (Object.keys(drift).length === 0) return undefined;
  return {
    kind: 'tuning.configure',
    host,
    tuning: drift,
    reason: seen ? 'drift: observed differs from the spec' : 'not reported by the host',
    changes: tuningChanges(drift, seen),
    risky: true,
    confirmTimeoutMs,
  };
}
