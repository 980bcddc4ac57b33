// The controller API's HA contract (issue 11): the cluster's VMs with their owners and policies, the hosts'
// liveness and maintenance, the HA manager's last decisions; and maintenance on and off.
import { z } from 'zod';
import { FencingTokenSchema, OwnerReasons } from '../shared/cluster.js';
import { NAME_PATTERN } from '../spec/schema.js';
import { EventsSchema } from './wire.js';

const name = z.string().regex(NAME_PATTERN);

/** `GET /v1/ha?decisions=N`. */
export const HaQuerySchema = z
  .object({ decisions: z.coerce.number().int().min(0).max(500).default(20) })
  .strict();

/** One VM of the cluster as HA sees it. */
export const HaVmViewSchema = z
  .object({
    name: z.string(),
    /** Its owner record: the one host that may run it, with the fencing token. */
    owner: z
      .object({
        host: z.string(),
        token: FencingTokenSchema,
        reason: z.enum(OwnerReasons),
        since: z.string(),
        from: z.string().optional(),
      })
      .optional(),
    policy: z.enum(['started', 'stopped', 'disabled']),
    priority: z.number().int(),
    group: z.string().optional(),
    /** The power state the spec wants, user stops counted. */
    desiredState: z.enum(['running', 'stopped']),
    userStopped: z.object({ by: z.string(), at: z.string() }).optional(),
  })
  .strict();

/** A compute host as HA sees it. */
export const HaHostViewSchema = z
  .object({
    name: z.string(),
    /** Its agent's lease exists (unknown without a coordination service: SQLite). */
    live: z.boolean().optional(),
    leaseAgeMs: z.number().optional(),
    maintenance: z.object({ since: z.string(), by: z.string() }).optional(),
  })
  .strict();

/** Answer of `GET /v1/ha`. */
export const HaViewSchema = z
  .object({
    /** Whether the applied spec declares a cluster. */
    cluster: z.boolean(),
    vms: z.array(HaVmViewSchema),
    hosts: z.array(HaHostViewSchema),
    /** The newest HA events (`ha.*`), oldest first. */
    decisions: EventsSchema,
  })
  .strict();
/** What `GET /v1/ha` answers. */
export type HaView = z.infer<typeof HaViewSchema>;

/** `:name` of a host route. */
export const HostParamsSchema = z.object({ name }).strict();
/** `PUT /v1/hosts/:name/maintenance`. */
export const MaintenanceBodySchema = z.object({ on: z.boolean() }).strict();
/** Its answer: what HA will move off the host (or may place there again). */
export const MaintenanceAnswerSchema = z
  .object({
    host: z.string(),
    on: z.boolean(),
    /** VMs the host owns that HA moves elsewhere (policy started or stopped). */
    moves: z.array(z.string()),
    /** VMs the host owns that stay (no HA policy, or disabled): stopped with the host if it goes down. */
    stays: z.array(z.string()),
  })
  .strict();
/** What the maintenance route answers. */
export type MaintenanceAnswer = z.infer<typeof MaintenanceAnswerSchema>;
