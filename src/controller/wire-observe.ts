// The API of metrics, alerts and the doctor's diagnoses (issue 14, docs/observability.md). Routes:
//
//   GET    /v1/metrics                          -> text/plain; version=0.0.4 (Prometheus exposition; role read-only)
//   GET    /v1/alerts                           -> AlertsView (rules, instances, silences)
//   POST   /v1/alerts/silences    SilenceRequest -> Silence      (role operator)
//   DELETE /v1/alerts/silences/:id              -> {deleted}     (role operator)
//   POST   /v1/alerts/ack         AckRequest     -> {acknowledged: number} (role operator)
//   GET    /v1/doctor?host=H                    -> DoctorReport, with `diagnoses` (controller/wire.ts)
import { z } from 'zod';

const name = z.string().regex(/^[a-z][a-z0-9-]{0,30}$/);
/** Label matchers of a silence or an ack: every one must equal the instance's label. */
const LabelsSchema = z
  .record(z.string().regex(/^[a-z_][a-z0-9_]{0,31}$/), z.string().max(128))
  .refine((l) => Object.keys(l).length <= 8, 'at most 8 labels');

export const ALERT_STATES = ['pending', 'firing', 'resolved'] as const;
export type AlertState = (typeof ALERT_STATES)[number];

/** One alert instance: a rule and the labels of one series its expression yields. */
export const AlertInstanceSchema = z
  .object({
    rule: name,
    labels: z.record(z.string(), z.string()),
    state: z.enum(ALERT_STATES),
    severity: z.enum(['info', 'warning', 'critical']),
    /** The expression's value at the last evaluation. */
    value: z.number(),
    summary: z.string(),
    /** When the condition first held (pending since), when it fired, when it resolved (ISO). */
    activeSince: z.string(),
    firedAt: z.string().optional(),
    resolvedAt: z.string().optional(),
    silencedBy: z.string().optional(),
    acknowledgedBy: z.string().optional(),
  })
  .strict();
export type AlertInstance = z.infer<typeof AlertInstanceSchema>;

export const SilenceSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9-]{1,64}$/),
    rule: name,
    labels: LabelsSchema,
    until: z.string(),
    createdBy: z.string().max(128),
    comment: z.string().max(512).optional(),
  })
  .strict();
export type Silence = z.infer<typeof SilenceSchema>;

export const SilenceRequestSchema = z
  .object({
    rule: name,
    labels: LabelsSchema.default({}),
    /** How long, in seconds (1 s .. 30 days). */
    forSeconds: z
      .number()
      .int()
      .min(1)
      .max(30 * 86_400),
    comment: z.string().max(512).optional(),
  })
  .strict();
export type SilenceRequest = z.infer<typeof SilenceRequestSchema>;

export const AckRequestSchema = z.object({ rule: name, labels: LabelsSchema.default({}) }).strict();
export type AckRequest = z.infer<typeof AckRequestSchema>;

/** `GET /v1/alerts`. Resolved instances stay listed for an hour. */
export const AlertsViewSchema = z
  .object({
    rules: z.array(
      z
        .object({
          name,
          expr: z.string(),
          op: z.string(),
          threshold: z.number(),
          for: z.string(),
          severity: z.string(),
        })
        .strict(),
    ),
    instances: z.array(AlertInstanceSchema),
    silences: z.array(SilenceSchema),
    /** When the rules were last evaluated (ISO); absent before the first collection. */
    evaluatedAt: z.string().optional(),
  })
  .strict();
export type AlertsView = z.infer<typeof AlertsViewSchema>;

export const DIAGNOSIS_IDS = [
  'stp-blocking',
  'vlan-not-on-trunk',
  'overlay-mtu',
  'storage-path-down',
  'guest-memory-growth',
  'kernel-feature-missing',
  'agent-unreachable',
  'clock-drift',
] as const;
export type DiagnosisId = (typeof DIAGNOSIS_IDS)[number];

/** One thing the doctor found wrong: what, where, the evidence it saw, and the fix. */
export const DiagnosisSchema = z
  .object({
    id: z.enum(DIAGNOSIS_IDS),
    severity: z.enum(['warning', 'critical']),
    host: z.string().optional(),
    /** The object it concerns, as an operator names it: `network lan port vm-web-0`, `vm db`, `pool data`. */
    object: z.string(),
    summary: z.string(),
    evidence: z.array(z.string()).max(32),
    fix: z.string(),
  })
  .strict();
export type Diagnosis = z.infer<typeof DiagnosisSchema>;
