// `loadBalancers:` (docs/load-balancers.md): a VIP on a multi-host network held by Keepalived (VRRP) on two or more
// hosts, each running HAProxy in front of backend VMs. Cross-references are checked in validate/lb.ts.
import { z } from 'zod';
import {
  LB_BACKENDS_MAX,
  LB_CHECK_COUNT_MAX,
  LB_CHECK_INTERVAL_MAX_MS,
  LB_CHECK_INTERVAL_MIN_MS,
  LB_CHECK_PATH_MAX,
  LB_CHECK_TIMEOUT_DEFAULT_MS,
  LB_CHECK_TIMEOUT_MAX_MS,
  LB_CHECK_TIMEOUT_MIN_MS,
  LB_FRONTENDS_MAX,
  LB_HOSTS_MAX,
  LOAD_BALANCERS_MAX,
} from '../shared/lb.js';
import { ipv4, name, port } from './schema-primitives.js';

/** One host running the load balancer: its own address on the network and its VRRP priority. */
export const LbHostSchema = z
  .object({
    host: name,
    /** This host's LB address on the network (VRRP, health checks and proxied connections come from it). */
    address: ipv4,
    /** VRRP priority (higher holds the VIP); default: first listed host 150, then 140, 130, ... */
    priority: z.number().int().min(1).max(254).optional(),
  })
  .strict();

/** A listening port on the VIP and the backends' port it forwards to. */
export const LbFrontendSchema = z
  .object({
    port,
    protocol: z.enum(['tcp', 'http']).default('tcp'),
    /** Port of the backends; default: `port`. */
    backendPort: port.optional(),
  })
  .strict();

/**
 * How HAProxy decides a backend is up: a check every `intervalMs`, `rise` passes to come up, `fall` fails to go down.
 * `timeoutMs` is how long a check may wait for the backend's answer once connected: HAProxy's own default is the
 * interval, which takes out a backend that answers a short-interval check slowly (a loaded host) although it serves.
 */
export const LbHealthCheckSchema = z
  .object({
    intervalMs: z.number().int().min(LB_CHECK_INTERVAL_MIN_MS).max(LB_CHECK_INTERVAL_MAX_MS).default(1000),
    timeoutMs: z
      .number()
      .int()
      .min(LB_CHECK_TIMEOUT_MIN_MS)
      .max(LB_CHECK_TIMEOUT_MAX_MS)
      .default(LB_CHECK_TIMEOUT_DEFAULT_MS),
    rise: z.number().int().min(1).max(LB_CHECK_COUNT_MAX).default(2),
    fall: z.number().int().min(1).max(LB_CHECK_COUNT_MAX).default(2),
    /** HTTP path checked on http frontends (a 2xx or 3xx answer passes); tcp frontends check a connect. */
    path: z
      .string()
      .max(LB_CHECK_PATH_MAX)
      .regex(/^\/[A-Za-z0-9._~/-]*$/, 'must be an absolute URL path of letters, digits, ., _, ~, - and /')
      .default('/'),
  })
  .strict();

/** A load balancer: VIP, frontends, backend VMs, health check, and the hosts running HAProxy + Keepalived. */
export const LoadBalancerSchema = z
  .object({
    name,
    /** A multi-host network (vxlan or vlan, backend linux) with a cidr, present on every LB host. */
    network: name,
    /** The virtual address clients use: in the network's subnet, outside DHCP, used by nothing else. */
    vip: ipv4,
    /** VRRP virtual router id, unique per network; default derived from the name. */
    vrid: z.number().int().min(1).max(255).optional(),
    hosts: z.array(LbHostSchema).min(2, 'a load balancer needs at least two hosts').max(LB_HOSTS_MAX),
    frontends: z
      .array(LbFrontendSchema)
      .min(1, 'a load balancer needs at least one frontend')
      .max(LB_FRONTENDS_MAX),
    /** Backend VMs (each with a fixed `ip` on the network). */
    backends: z.array(name).min(1, 'a load balancer needs at least one backend').max(LB_BACKENDS_MAX),
    healthCheck: LbHealthCheckSchema.default({
      intervalMs: 1000,
      timeoutMs: LB_CHECK_TIMEOUT_DEFAULT_MS,
      rise: 2,
      fall: 2,
      path: '/',
    }),
  })
  .strict();

/** The `loadBalancers:` section. */
export const LoadBalancersSchema = z.array(LoadBalancerSchema).max(LOAD_BALANCERS_MAX).default([]);

/** A load balancer entry of a spec. */
export type LoadBalancerSpec = z.infer<typeof LoadBalancerSchema>;
