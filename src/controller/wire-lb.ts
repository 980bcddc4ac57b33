// Wire of load balancers in the controller's API (docs/load-balancers.md): verify's LB cells and `GET
// /v1/load-balancers` (each LB of the applied spec with what its hosts report).
import { z } from 'zod';

/** One LB check of a verify (src/verify/lb.ts's LbCell). */
export const LbCellSchema = z.object({
  lb: z.string(),
  check: z.enum(['vip', 'host', 'reach', 'healthy', 'backend']),
  from: z.string().optional(),
  to: z.string(),
  port: z.number().int().optional(),
  detail: z.string(),
  takenOut: z.boolean().optional(),
  unmeasured: z.boolean().optional(),
  ok: z.boolean(),
});

/** One LB host as its agent reports it (absent fields: the host did not answer). */
export const LbHostViewSchema = z.object({
  host: z.string(),
  address: z.string(),
  priority: z.number().int(),
  reachable: z.boolean(),
  haproxy: z.boolean().optional(),
  keepalived: z.boolean().optional(),
  holdsVip: z.boolean().optional(),
  problems: z.array(z.string()),
});

/** One load balancer of the applied spec: VIP, who holds it, backends UP/DOWN (HAProxy's view), its hosts. */
export const LbViewSchema = z.object({
  name: z.string(),
  network: z.string(),
  vip: z.string(),
  frontends: z.array(
    z.object({ port: z.number().int(), protocol: z.enum(['tcp', 'http']), backendPort: z.number().int() }),
  ),
  /** Hosts holding the VIP now (one when sound). */
  vipHolders: z.array(z.string()),
  /** Each backend VM: UP or DOWN in HAProxy (the VIP holder's view), unknown when no stats answered. */
  backends: z.array(
    z.object({ vm: z.string(), address: z.string().optional(), state: z.enum(['UP', 'DOWN', 'unknown']) }),
  ),
  /** The host whose HAProxy the backend states come from. */
  statsFrom: z.string().optional(),
  hosts: z.array(LbHostViewSchema),
});
/** `GET /v1/load-balancers`. */
export const LbListSchema = z.array(LbViewSchema);
/** A load balancer as `vmlink lb list` shows it. */
export type LbView = z.infer<typeof LbViewSchema>;
