// The API contract of live migrations (docs/mobility.md): explain and run, shared by the server, the CLI and the UI.
import { z } from 'zod';
import { NAME_PATTERN } from '../spec/schema.js';

const name = z.string().regex(NAME_PATTERN);

/** `POST /v1/vms/:name/migrate` and `GET /v1/vms/:name/migrate?to=`. */
export const MigrateRequestSchema = z.object({ to: name }).strict();

export const MigrationCheckSchema = z
  .object({
    id: z.string(),
    ok: z.boolean(),
    severity: z.enum(['blocker', 'warning', 'info']),
    message: z.string(),
    fix: z.string().optional(),
  })
  .strict();

export const MigrationExplainSchema = z
  .object({
    vm: name,
    from: name,
    to: name,
    ok: z.boolean(),
    blockMigration: z.boolean(),
    copiedDisks: z.array(z.object({ disk: z.string(), sizeMiB: z.number() }).strict()),
    checks: z.array(MigrationCheckSchema),
    estimate: z
      .object({
        transferMiB: z.number(),
        bandwidthMiBps: z.number(),
        bandwidthAssumed: z.boolean(),
        dirtyRateMiBps: z.number().optional(),
        seconds: z.number(),
        converges: z.boolean(),
      })
      .strict(),
  })
  .strict();

export const MigrationReportSchema = z
  .object({
    vm: name,
    from: name,
    to: name,
    ok: z.literal(true),
    explain: MigrationExplainSchema,
    totalMs: z.number(),
    downtimeMs: z.number().optional(),
    qemuTotalMs: z.number().optional(),
    transferredBytes: z.number(),
    blockMigration: z.boolean(),
    /** Bytes of the local disks copied before the switch-over (block migration). */
    diskCopiedBytes: z.number().min(0).optional(),
    token: z.string().optional(),
    /** The shared volumes: iscsi ones fenced to the target, nfs ones skipped (`pool/volume`), a fence's failure. */
    storage: z
      .object({
        fenced: z.array(z.string().max(200)).max(64),
        skipped: z.array(z.string().max(200)).max(64),
        error: z.string().max(4096).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
