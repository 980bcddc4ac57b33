// Bench-only knobs of a live migration (bench/migrate.ts compares variants side by side, move by move, in one lab):
// the agents, and the controller for `resumeOnArrival`, read them at each migration from the JSON file that
// VMLINK_MIGRATE_TUNING names. Unset (every real deployment), nothing changes and nothing is read. The file is the
// bench's own (root's temp dir), still read capped, strictly parsed and without following a link; a bad file fails
// the migration with its reason rather than running a variant half-applied.
import { z } from 'zod';
import { readJsonFile } from './state-file.js';

export const MIGRATION_TUNING_ENV = 'VMLINK_MIGRATE_TUNING';

export const MigrationTuningSchema = z
  .object({
    /** The variant's name, logged with each timing stamp. */
    variant: z.string().regex(/^[a-z0-9-]{1,32}$/),
    /** `nodelay`: the relay's TLS connection without Nagle's delay. */
    relay: z.enum(['default', 'nodelay']).optional(),
    /** The relay's window (KiB unacknowledged at most; relay.ts); 0: none (as before it); absent: the default. */
    relayWindowKiB: z.union([z.literal(0), z.number().int().min(64).max(65_536)]).optional(),
    /** QEMU's `max-bandwidth` (MiB/s) instead of the lifted cap. */
    maxBandwidthMiB: z.number().int().min(8).max(10_240).optional(),
    /** QEMU's downtime limit (ms) throughout, instead of the controller's (300). */
    downtimeLimitMs: z.number().int().min(10).max(60_000).optional(),
    /** The target points its bridges at the VM's taps before `cont` (as before), not beside it. */
    claimBeforeCont: z.boolean().optional(),
    /** QEMU's first downtime limit (ms, doubled each pass up to the limit); 0: the limit throughout (no ramp). */
    downtimeStartMs: z.number().int().min(0).max(60_000).optional(),
    /** Nice value of the source QEMU's vCPU threads while the migration runs (-10..10; restored after). */
    vcpuNice: z.number().int().min(-10).max(10).optional(),
    /** The controller's switch-over (controller/migrate/run.ts): the target resumes on arrival, or on its go. */
    resumeOnArrival: z.boolean().optional(),
  })
  .strict();
export type MigrationTuning = z.infer<typeof MigrationTuningSchema>;

/** The variant the bench set for this migration; undefined outside the bench. */
export async function benchTuning(
  env: NodeJS.ProcessEnv = process.env,
): Promise<MigrationTuning | undefined> {
  const path = env[MIGRATION_TUNING_ENV];
  if (!path) return undefined;
  return readJsonFile(path, MigrationTuningSchema, { maxBytes: 4096 });
}
