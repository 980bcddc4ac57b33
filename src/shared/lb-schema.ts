// The strict schema of a load balancer's host config (`LbConfig`): the agent's wire and the LB driver's state file
// both parse with it, so a config reaching HAProxy or Keepalived has passed it once more than the spec.
import { z } from 'zod';
import {
  LB_BACKENDS_MAX,
  LB_CHECK_COUNT_MAX,
  LB_CHECK_INTERVAL_MAX_MS,
  LB_CHECK_INTERVAL_MIN_MS,
  LB_CHECK_PATH_MAX,
  LB_CHECK_TIMEOUT_MAX_MS,
  LB_CHECK_TIMEOUT_MIN_MS,
  LB_FRONTENDS_MAX,
  LB_HOSTS_MAX,
  type LbConfig,
} from './lb.js';

const name = z.string().regex(/^[a-z][a-z0-9-]{0,30}$/);
const ipv4 = z.string().regex(/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/);
const port = z.number().int().min(1).max(65_535);

/** `LbConfig`, strictly. */
export const LbConfigSchema = z
  .object({
    name,
    network: name,
    bridge: z.string().regex(/^vl[a-z]-[A-Za-z0-9_.-]{1,11}$/),
    mtu: z.number().int().min(576).max(65_535),
    prefix: z.number().int().min(8).max(30),
    gateway: ipv4.optional(),
    vip: ipv4,
    vrid: z.number().int().min(1).max(255),
    address: ipv4,
    priority: z.number().int().min(1).max(254),
    peers: z
      .array(ipv4)
      .min(1)
      .max(LB_HOSTS_MAX - 1),
    frontends: z
      .array(z.object({ port, protocol: z.enum(['tcp', 'http']), backendPort: port }).strict())
      .min(1)
      .max(LB_FRONTENDS_MAX),
    backends: z
      .array(z.object({ vm: name, address: ipv4 }).strict())
      .min(1)
      .max(LB_BACKENDS_MAX),
    healthCheck: z
      .object({
        intervalMs: z.number().int().min(LB_CHECK_INTERVAL_MIN_MS).max(LB_CHECK_INTERVAL_MAX_MS),
        timeoutMs: z.number().int().min(LB_CHECK_TIMEOUT_MIN_MS).max(LB_CHECK_TIMEOUT_MAX_MS).optional(),
        rise: z.number().int().min(1).max(LB_CHECK_COUNT_MAX),
        fall: z.number().int().min(1).max(LB_CHECK_COUNT_MAX),
        path: z
          .string()
          .max(LB_CHECK_PATH_MAX)
          .regex(/^\/[A-Za-z0-9._~/-]*$/),
      })
      .strict(),
  })
  .strict() satisfies z.ZodType<LbConfig>;

/** What a load balancer's host reports (`ObservedLb`), strictly. */
export const ObservedLbSchema = z
  .object({
    name,
    configHash: z.string().max(128),
    haproxy: z.boolean(),
    keepalived: z.boolean(),
    holdsVip: z.boolean(),
    backendsUp: z.array(name).max(LB_BACKENDS_MAX).optional(),
    problems: z.array(z.string().max(512)).max(16),
  })
  .strict();
