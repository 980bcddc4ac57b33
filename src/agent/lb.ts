// Load balancers on this host (docs/load-balancers.md): carries out `lb.ensure` / `lb.delete` through the LB driver
// and reports what runs. An agent without the driver (a storage host) refuses with a reason.
import type { LbDriver } from '../drivers/lb/driver.js';
import { UnsupportedError } from '../shared/errors.js';
import type { ObservedLb } from '../shared/lb.js';
import type { OpContext } from '../shared/op.js';
import type { AgentAction } from './wire.js';

/** An LB action of the agent's wire. */
export type LbAction = Extract<AgentAction, { kind: 'lb.ensure' | 'lb.delete' }>;

/** Carries out `action` on `driver`. */
export async function executeLb(
  host: string,
  driver: LbDriver | undefined,
  action: LbAction,
  ctx: OpContext,
): Promise<void> {
  if (!driver)
    throw new UnsupportedError(
      `host ${host} runs no load balancers (a storage host, or an agent without HAProxy and Keepalived); move loadBalancers[].hosts off it`,
      `host/${host}`,
    );
  if (action.kind === 'lb.ensure') return driver.ensure(action.lb, action.configHash, ctx);
  return driver.delete(action.name, ctx);
}

/** The host's load balancers; none without the driver. */
export function observeLbs(driver: LbDriver | undefined): Promise<ObservedLb[]> {
  return driver ? driver.list() : Promise.resolve([]);
}
