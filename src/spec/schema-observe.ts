// The spec's `alerts:` and `hosts[].tuning` (issue 14, docs/observability.md). Each object is checked alone here;
// an alert's metric and labels against the catalog, and its `scale` volume against the spec, in validate/alerts.ts.
import { z } from 'zod';
import { name } from './schema-primitives.js';

/** Most alert rules in one spec. */
export const ALERT_RULES_MAX = 256;
/** Most actions of one rule. */
export const ALERT_ACTIONS_MAX = 8;
/** Longest `for` of a rule. */
export const ALERT_FOR_MAX_MS = 24 * 3600_000;

/** `30s`, `5m`, `2h` (also `0s`): a duration in whole seconds, minutes or hours. */
export const DURATION_PATTERN = /^(0|[1-9]\d{0,4})(s|m|h)$/;

/** Milliseconds of a duration DURATION_PATTERN accepts. */
export function parseDuration(d: string): number {
  const m = DURATION_PATTERN.exec(d);
  if (!m) throw new Error(`invalid duration ${JSON.stringify(d)}: use e.g. 30s, 5m or 2h`);
  return Number(m[1]) * (m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 3600_000);
}

const duration = (max: number) =>
  z
    .string()
    .regex(DURATION_PATTERN, 'must be a duration such as 30s, 5m or 2h')
    // zod runs a refinement even after the pattern failed: only a duration the pattern accepts is measured.
    .refine(
      (d) => !DURATION_PATTERN.test(d) || parseDuration(d) <= max,
      `must be at most ${max / 3600_000}h`,
    );

/** An action run when an alert fires (and, for webhooks, when it resolves). */
export const AlertActionSchema = z.discriminatedUnion('type', [
  /** A line in the controller's log (the event is recorded either way). */
  z.object({ type: z.literal('log') }).strict(),
  /** POST of the alert as JSON; retried with backoff. */
  z
    .object({
      type: z.literal('webhook'),
      url: z
        .string()
        .max(2048)
        .regex(/^https?:\/\/[^\s/]+(\/\S*)?$/, 'must be an http:// or https:// URL'),
    })
    .strict(),
  /** Grows a volume of a pool that can grow it (the `vmlink volume resize` path), up to `maxMiB`. */
  z
    .object({
      type: z.literal('scale'),
      /** `POOL/NAME`. */
      volume: z.string().regex(/^[a-z][a-z0-9-]{0,30}\/[a-z][a-z0-9-]{0,62}$/, 'must be POOL/NAME'),
      growByMiB: z
        .number()
        .int()
        .min(1)
        .max(16 * 1024 * 1024),
      maxMiB: z
        .number()
        .int()
        .min(1)
        .max(64 * 1024 * 1024),
    })
    .strict(),
]);
export type AlertAction = z.infer<typeof AlertActionSchema>;

/**
 * An alert rule. `expr` is a metric of the catalog with optional label matchers and an optional aggregation:
 * `vmlink_host_cpu_utilization`, `vmlink_pool_utilization{pool="data"}`, `max by (host) (vmlink_vm_cpu_utilization)`.
 */
export const AlertRuleSchema = z
  .object({
    name,
    expr: z.string().min(1).max(512),
    op: z.enum(['>', '>=', '<', '<=']).default('>'),
    threshold: z.number().finite(),
    /** How long the condition must hold before the alert fires. */
    for: duration(ALERT_FOR_MAX_MS).default('0s'),
    severity: z.enum(['info', 'warning', 'critical']).default('warning'),
    /** One line for people; `{{label}}` is replaced by the instance's label value, `{{value}}` by its value. */
    summary: z.string().max(512).optional(),
    actions: z
      .array(AlertActionSchema)
      .max(ALERT_ACTIONS_MAX)
      .default([{ type: 'log' }]),
  })
  .strict();
export type AlertRuleSpec = z.infer<typeof AlertRuleSchema>;

export const AlertRulesSchema = z.array(AlertRuleSchema).max(ALERT_RULES_MAX).default([]);

/** A host's TCP tuning: per-network-namespace parameters only (a lab host's namespace, a real host's own). */
export const HostTuningSchema = z
  .object({
    /** `net.ipv4.tcp_congestion_control` (bbr, cubic, reno, ...): refused where the kernel lacks it. */
    congestion: z
      .string()
      .regex(/^[a-z][a-z0-9_]{0,15}$/, 'must be a congestion control name such as bbr or cubic')
      .optional(),
    /** `net.ipv4.tcp_mtu_probing`: 0 off, 1 after a black hole is detected, 2 always. */
    mtuProbing: z.union([z.literal(0), z.literal(1), z.literal(2)]).optional(),
    /** `net.ipv4.tcp_ecn`: 0 off, 1 request and accept, 2 accept only. */
    ecn: z.union([z.literal(0), z.literal(1), z.literal(2)]).optional(),
    /** `net.ipv4.tcp_fastopen` (bit mask: 1 client, 2 server). */
    fastOpen: z.number().int().min(0).max(3).optional(),
  })
  .strict();
export type HostTuningSpec = z.infer<typeof HostTuningSchema>;

/** The sysctl key of each tuning field. */
export const TUNING_SYSCTLS: Readonly<Record<keyof HostTuningSpec, string>> = {
  congestion: 'net.ipv4.tcp_congestion_control',
  mtuProbing: 'net.ipv4.tcp_mtu_probing',
  ecn: 'net.ipv4.tcp_ecn',
  fastOpen: 'net.ipv4.tcp_fastopen',
};
