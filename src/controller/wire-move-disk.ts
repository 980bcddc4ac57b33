// The API contract of `vmlink vm move-disk` (docs/mobility.md): the request and the task's result.
import { z } from 'zod';
import { NAME_PATTERN } from '../spec/schema.js';

const name = z.string().regex(NAME_PATTERN);

/** `POST /v1/vms/:name/disks/:disk/move`. */
export const MoveDiskRequestSchema = z.object({ pool: name }).strict();

/** The path parameters of that route. */
export const MoveDiskParamsSchema = z.object({ name, disk: name }).strict();

/** What a completed move reports. */
export const MoveDiskReportSchema = z
  .object({
    vm: name,
    disk: name,
    host: name,
    /** Where the disk was: `pool <name>` or `the VM directory`. */
    from: z.string(),
    pool: name,
    volume: name,
    /** Wall time of the move, checks included (ms). */
    ms: z.number(),
    /** What the new volume holds on disk (the host's report after the move). */
    allocatedMiB: z.number().optional(),
    /** Whether the applied spec already puts the disk in that pool. */
    specSays: z.boolean(),
    /** What the user does next. */
    next: z.string(),
  })
  .strict();
export type MoveDiskReport = z.infer<typeof MoveDiskReportSchema>;
