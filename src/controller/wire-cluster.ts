// Wire types of `GET /v1/cluster`: this controller (active or standby), the active one, etcd's members and the
// hosts' leases, as any controller of the cluster sees them (standbys answer it too).
import { z } from 'zod';
import { ETCD_MEMBERS_MAX } from '../shared/limits.js';

/** Whether this controller acts (the one active controller) or stands by. */
export const ControllerRoles = ['active', 'standby'] as const;
/** One of `ControllerRoles`. */
export type ControllerRole = (typeof ControllerRoles)[number];

/** A controller process as the election knows it (`ControllerInfo`), with its pid. */
export const ControllerViewSchema = z
  .object({
    id: z.string().max(256),
    name: z.string().max(128),
    address: z.string().max(4096).describe('unix:///path.sock (or https://addr:port)'),
    tcp: z.string().max(4096).optional().describe('its TCP listener, https://addr:port, when it has one'),
    since: z.string().describe('when the process started (ISO)'),
    pid: z.number().int().positive().optional().describe('the process id, as its election id says'),
  })
  .strict();
/** A controller process, as `GET /v1/cluster` shows it. */
export type ControllerView = z.infer<typeof ControllerViewSchema>;

/** `GET /v1/cluster`. */
export const ClusterViewSchema = z
  .object({
    store: z.enum(['sqlite', 'etcd']),
    self: ControllerViewSchema.extend({
      pid: z.number().int().positive(),
      role: z.enum(ControllerRoles),
      roleSince: z.string().describe('when this controller took its current role (ISO)'),
    }).strict(),
    active: ControllerViewSchema.optional().describe('the active controller; absent when none is known'),
    members: z
      .array(
        z
          .object({
            name: z.string(),
            endpoint: z.string(),
            healthy: z.boolean(),
            hasLeader: z.boolean().optional(),
            isLeader: z.boolean().optional(),
            error: z.string().optional(),
          })
          .strict(),
      )
      .max(ETCD_MEMBERS_MAX * 4),
    hosts: z
      .array(
        z
          .object({
            host: z.string(),
            leaseId: z.string(),
            heartbeatSeconds: z.number().int().positive(),
            since: z.string().describe("when the lease was granted (ISO, the agent's clock)"),
            ageMs: z.number().int().nonnegative().describe('how long this controller has seen the lease'),
          })
          .strict(),
      )
      .max(4096),
    problems: z.array(z.string()).max(16).describe('what could not be learnt (etcd unreachable, ...)'),
  })
  .strict();
/** `GET /v1/cluster`. */
export type ClusterView = z.infer<typeof ClusterViewSchema>;
