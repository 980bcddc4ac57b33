// A host's TCP tuning as agents report it (docs/observability.md, "Host tuning"); the spec side is
// spec/schema-observe.ts (HostTuningSchema, TUNING_SYSCTLS).
import type { HostTuningSpec } from '../spec/schema-observe.js';

/** A field of `hosts[].tuning`. */
export type TuningField = keyof HostTuningSpec;

/** The tuning fields in the order plans and status name them. */
export const TUNING_FIELDS = [
  'congestion',
  'mtuProbing',
  'ecn',
  'fastOpen',
] as const satisfies readonly TuningField[];

/** Values of the tuning fields as a host has them now (a kernel may hold values the spec does not offer). */
export interface TuningValues {
  congestion?: string;
  mtuProbing?: number;
  ecn?: number;
  fastOpen?: number;
}

/** What a host can tune in its network namespace, and what it has now (`HostCapabilities.tuning`). */
export interface TuningCapabilities {
  /**
   * Congestion controls this host can set: loaded or loadable (`modprobe -n tcp_NAME`) in the machine's root
   * namespace; elsewhere only the loaded ones the machine allows (`tcp_allowed_congestion_control`).
   */
  congestion: string[];
  /** Loaded in the kernel (`net.ipv4.tcp_available_congestion_control`). */
  congestionAvailable: string[];
  /** Allowed outside the root namespace (`net.ipv4.tcp_allowed_congestion_control`). */
  congestionAllowed: string[];
  /** Whether the agent runs in the machine's root network namespace (a lab host does not). */
  rootNamespace: boolean;
  /** Tuning fields whose sysctl exists in the host's namespace. */
  keys: TuningField[];
  /** Values now, of the fields whose sysctl exists. */
  current: TuningValues;
}

/** `tuning` field by field as `name value` (`congestion bbr`, `ecn 1`), in TUNING_FIELDS order. */
export function describeTuning(t: TuningValues): string[] {
  return TUNING_FIELDS.filter((f) => t[f] !== undefined).map((f) => `${f} ${t[f]}`);
}
