// `GET /v1/guests/interfaces`: every running VM's guest interfaces in one answer (wire-guests.ts), asked of the
// guest agents a few at a time, each bounded in time, the whole answer bounded by a deadline.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import { ErrorBodySchema } from '../shared/errors.js';
import { settleLimited } from '../shared/queue.js';
import { NAME_PATTERN } from '../spec/schema.js';
import {
  GUEST_INTERFACES_ROUTE,
  GUEST_LIST_CONCURRENCY,
  GUEST_LIST_DEADLINE_MS,
  GUEST_LIST_MAX_ADDRESSES,
  GUEST_LIST_MAX_INTERFACES,
  GUEST_LIST_MAX_VMS,
  GUEST_LIST_VM_TIMEOUT_MS,
  type GuestEntry,
  type GuestList,
  GuestListSchema,
} from './wire-guests.js';

/** Timing of one answer (tests shorten it). */
export interface GuestListTiming {
  vmTimeoutMs: number;
  deadlineMs: number;
}

const DEFAULT_TIMING: GuestListTiming = {
  vmTimeoutMs: GUEST_LIST_VM_TIMEOUT_MS,
  deadlineMs: GUEST_LIST_DEADLINE_MS,
};

/** The guest interfaces of every running VM of `hypervisor`, bounded (see wire-guests.ts). */
export async function listGuestInterfaces(
  hypervisor: Pick<HypervisorDriver, 'list' | 'guestInterfaces'>,
  timing: GuestListTiming = DEFAULT_TIMING,
): Promise<GuestList> {
  const running = (await hypervisor.list())
    .filter((v) => v.state === 'running' && NAME_PATTERN.test(v.name))
    .map((v) => v.name)
    .sort();
  const names = running.slice(0, GUEST_LIST_MAX_VMS);
  const deadline = Date.now() + timing.deadlineMs;
  const settled = await settleLimited(names, GUEST_LIST_CONCURRENCY, (name) => {
    const left = Math.min(timing.vmTimeoutMs, deadline - Date.now());
    if (left <= 0) return Promise.reject(new Error('not asked: the answer ran out of time'));
    return withTimeout(hypervisor.guestInterfaces(name), left);
  });
  const vms = names.map((name, i): GuestEntry => {
    const r = settled[i]!;
    if (r.status === 'rejected')
      return { name, error: String((r.reason as Error)?.message ?? r.reason).slice(0, 512) };
    return {
      name,
      interfaces: r.value.slice(0, GUEST_LIST_MAX_INTERFACES).flatMap((n) => {
        const nic = {
          name: String(n.name).slice(0, 64),
          mac: String(n.mac).slice(0, 32),
          addresses: n.addresses
            .filter((a) => typeof a === 'string' && a.length > 0 && a.length <= 64)
            .slice(0, GUEST_LIST_MAX_ADDRESSES),
        };
        return nic.name && nic.mac ? [nic] : [];
      }),
    };
  });
  return { vms, truncated: running.length > names.length };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`its guest agent did not answer within ${Math.ceil(ms / 1000)} s`)),
      ms,
    );
  });
  // A guest call that fails after its deadline is not an unhandled rejection.
  p.catch(() => undefined);
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Registers `GET /v1/guests/interfaces` on the agent's API. */
export function registerGuestListRoute(
  app: FastifyInstance,
  hypervisor: Pick<HypervisorDriver, 'list' | 'guestInterfaces'>,
): void {
  app
    .withTypeProvider<ZodTypeProvider>()
    .get(
      GUEST_INTERFACES_ROUTE,
      { schema: { response: { 200: GuestListSchema, '4xx': ErrorBodySchema, '5xx': ErrorBodySchema } } },
      async () => listGuestInterfaces(hypervisor),
    );
}
