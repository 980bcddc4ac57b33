// Wire of host tuning (docs/observability.md, "Host tuning"): the `tuning.configure` action, the values a
// commit-confirm rollback restores, and the tuning part of a host's capability report. Bounded: an agent is
// untrusted input to the controller.
import { z } from 'zod';
import type { TuningCapabilities, TuningValues } from '../shared/tuning.js';
import { HostTuningSchema } from '../spec/schema-observe.js';

/** A congestion control's name, as the spec and the kernel spell it. */
export const CONGESTION_NAME = /^[a-z][a-z0-9_]{0,15}$/;
/** Most names in one list of a tuning report (Linux ships fewer than 20 congestion controls). */
export const TUNING_LIST_MAX = 64;

const congestion = z.string().regex(CONGESTION_NAME);
// A kernel may hold values the spec does not offer (tcp_fastopen flags, AccECN modes of tcp_ecn).
const value = z.number().int().min(0).max(999_999_999);

/** Values of the tuning fields (what a rollback restores, what a host has now). */
export const TuningValuesSchema = z
  .object({
    congestion: congestion.optional(),
    mtuProbing: value.optional(),
    ecn: value.optional(),
    fastOpen: value.optional(),
  })
  .strict() satisfies z.ZodType<TuningValues>;

const fields = z.enum(['congestion', 'mtuProbing', 'ecn', 'fastOpen']);

/** The tuning part of a host's capability report (`HostCapabilities.tuning`). */
export const TuningCapabilitiesSchema = z.object({
  congestion: z.array(congestion).max(TUNING_LIST_MAX),
  congestionAvailable: z.array(congestion).max(TUNING_LIST_MAX),
  congestionAllowed: z.array(congestion).max(TUNING_LIST_MAX),
  rootNamespace: z.boolean(),
  keys: z.array(fields).max(4),
  current: TuningValuesSchema,
}) satisfies z.ZodType<TuningCapabilities>;

/**
 * Sets the host's TCP tuning: the fields given, others left alone. Sent commit-confirmed by apply (`confirm` is the
 * agent wire's ConfirmSchema, passed in to keep one definition).
 */
export function tuningActionSchema<C extends z.ZodType>(confirm: C) {
  return z
    .object({
      kind: z.literal('tuning.configure'),
      tuning: HostTuningSchema.refine((t) => Object.keys(t).length > 0, 'must set at least one field'),
      confirm: confirm.optional(),
    })
    .strict();
}
