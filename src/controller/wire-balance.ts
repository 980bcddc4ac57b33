// The controller API's balancing contract (issue 13, docs/mobility.md): `GET /v1/balance` (the plan) and
// `POST /v1/balance/apply` (run it as live migrations).
import { z } from 'zod';

const SpreadSchema = z.object({ cpu: z.number(), memory: z.number() }).strict();
const HostLoadSchema = z
  .object({ host: z.string(), cpuPercent: z.number(), memoryPercent: z.number() })
  .strict();

/** A balance plan as the API answers it (the planner's `BalancePlan` plus what the gathering left out). */
export const BalancePlanViewSchema = z
  .object({
    mode: z.enum(['manual', 'automatic']),
    thresholdPoints: z.number(),
    before: z.object({ spread: SpreadSchema, hosts: z.array(HostLoadSchema) }).strict(),
    after: z.object({ spread: SpreadSchema, hosts: z.array(HostLoadSchema) }).strict(),
    moves: z.array(
      z
        .object({ vm: z.string(), from: z.string(), to: z.string(), reason: z.string(), after: SpreadSchema })
        .strict(),
    ),
    balanced: z.boolean(),
    notes: z.array(z.string()),
    /** How long planning took (ms), gathering excluded. */
    planMs: z.number(),
  })
  .strict();
export type BalancePlanView = z.infer<typeof BalancePlanViewSchema>;

/** One move as `--apply` ran it. */
export const BalanceMoveResultSchema = z
  .object({
    vm: z.string(),
    from: z.string(),
    to: z.string(),
    ok: z.boolean(),
    error: z.string().optional(),
    totalMs: z.number().optional(),
    downtimeMs: z.number().optional(),
  })
  .strict();

/** `POST /v1/balance/apply`'s answer: the plan and each move's outcome, in order (it stops at the first failure). */
export const BalanceApplyAnswerSchema = z
  .object({ plan: BalancePlanViewSchema, results: z.array(BalanceMoveResultSchema) })
  .strict();
export type BalanceApplyAnswer = z.infer<typeof BalanceApplyAnswerSchema>;
