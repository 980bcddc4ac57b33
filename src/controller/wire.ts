// Wire types of the controller's REST API, shared by the server, the CLI and (later) the web UI.
import { z } from 'zod';
import { NAME_PATTERN } from '../spec/schema.js';

/** A spec sent by a client: the YAML text and where it came from (for messages). */
export const SpecBodySchema = z
  .object({
    spec: z
      .string()
      .min(1)
      .max(4 * 1024 * 1024)
      .describe('the spec as YAML text'),
    source: z.string().max(4096).default('spec').describe('file name shown in messages'),
  })
  .strict();

/** Body of `destroy`: a spec, or nothing for the last applied one. */
export const DestroyBodySchema = z
  .object({
    spec: z
      .string()
      .min(1)
      .max(4 * 1024 * 1024)
      .optional(),
    source: z.string().max(4096).default('spec'),
  })
  .strict();

/** A VM named in a path. */
export const VmParamsSchema = z.object({ name: z.string().regex(NAME_PATTERN) }).strict();

/** Body of `vm stop`. */
export const VmStopBodySchema = z.object({ force: z.boolean().default(false) }).strict();

/** Body of `vm exec`. */
export const VmExecBodySchema = z
  .object({
    argv: z.array(z.string()).min(1),
    timeoutMs: z.number().int().min(100).max(600_000).default(30_000),
    input: z.string().optional(),
  })
  .strict();

/** A task id in a path, and the progress index to read from. */
export const TaskParamsSchema = z.object({ id: z.string().uuid() }).strict();
/** Query of `GET /v1/tasks/:id`. */
export const TaskQuerySchema = z.object({ since: z.coerce.number().int().min(0).default(0) }).strict();

/** `202 Accepted` answer of a long operation. */
export interface TaskAccepted {
  taskId: string;
}
