// Wire of load balancers (docs/load-balancers.md): the `lb.ensure` and `lb.delete` actions and the LB part of a
// host's report. Strict and bounded both ways: the config reaches HAProxy's and Keepalived's files, and a report is
// untrusted input to the controller.
import { z } from 'zod';
import { LOAD_BALANCERS_MAX } from '../shared/lb.js';
import { LbConfigSchema, ObservedLbSchema } from '../shared/lb-schema.js';

const name = z.string().regex(/^[a-z][a-z0-9-]{0,30}$/);
const hash = z.string().regex(/^[0-9a-f]{1,64}$/);

/** Creates, repairs or updates a load balancer on the host. */
export const LbEnsureActionSchema = z
  .object({ kind: z.literal('lb.ensure'), lb: LbConfigSchema, configHash: hash })
  .strict();

/** Removes a load balancer from the host (missing: nothing to do). */
export const LbDeleteActionSchema = z.object({ kind: z.literal('lb.delete'), name }).strict();

/** The `loadBalancers` part of a host's report. */
export const ObservedLbsSchema = z.array(ObservedLbSchema).max(LOAD_BALANCERS_MAX);
