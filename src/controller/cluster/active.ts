// What a standby controller refuses: API calls (421 `not-active`, naming the active controller's address so clients
// go there) and writes to the store (a controller that just lost the active role writes nothing more).
import type { FastifyInstance } from 'fastify';
import { NotActiveError } from '../../shared/errors.js';
import type { Listener } from '../auth/access.js';
import type { Store } from '../store/types.js';

/** Routes a standby serves itself; every other one answers 421. */
export const STANDBY_ROUTES: readonly string[] = [
  'GET /v1/health',
  'GET /v1/cluster',
  'GET /openapi.json',
  // A task this controller ran while it was active (a CLI polling it learns it was cancelled, and why).
  'GET /v1/tasks/:id',
];

/** Whether this controller is the active one, and where the active one is. */
export interface ActiveGate {
  /** Whether this controller may act now. */
  isActive(): boolean;
  /** This controller's name, for messages. */
  readonly selfName: string;
  /** The active controller's name and its address for clients of `listener`; undefined when none is known. */
  activeFor(listener: Listener): Promise<{ name: string; address?: string } | undefined>;
}

/** The refusal of a standby: where the active controller is for clients of `listener`, or that none is known. */
export async function notActive(gate: ActiveGate, listener: Listener): Promise<NotActiveError> {
  const active = await gate.activeFor(listener).catch(() => undefined);
  if (!active)
    return new NotActiveError(
      `controller ${gate.selfName} is a standby and no controller is active right now (an election may be under way: try again in a few seconds)`,
    );
  if (!active.address)
    return new NotActiveError(
      `controller ${gate.selfName} is a standby; the active controller ${active.name} has no ${listener === 'tcp' ? 'TCP listener' : 'unix socket'} to send you to`,
    );
  return new NotActiveError(
    `controller ${gate.selfName} is a standby; the active controller is ${active.name} at ${active.address}`,
    active.address,
  );
}

/**
 * Answers 421 `not-active` for every route but `STANDBY_ROUTES` while `gate` says this controller is a standby.
 * Install it after access control: a caller is authenticated (and authorized) before it learns where the active
 * controller is.
 */
export function installStandbyGate(app: FastifyInstance, gate: ActiveGate, listener: Listener): void {
  app.addHook('onRequest', async (req) => {
    if (gate.isActive()) return;
    const route = req.routeOptions.url;
    // A path no route serves gets its 404 from any controller.
    if (route === undefined) return;
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    if (STANDBY_ROUTES.includes(`${method} ${route}`)) return;
    throw await notActive(gate, listener);
  });
}

/**
 * `store` for the parts of the controller that act (applies, VM control, heartbeats, the HA manager): every write
 * first asks `assertActive`, so a controller that lost the active role writes nothing more, even from a task or
 * loop still unwinding. Reads pass through (a standby's views read the shared store).
 */
export function activeOnly(store: Store, assertActive: () => void): Store {
  const guard =
    <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      assertActive();
      return f(...a);
    };
  return {
    get: <T>(key: string) => store.get<T>(key),
    list: <T>(prefix: string) => store.list<T>(prefix),
    getVersioned: <T>(key: string) => store.getVersioned<T>(key),
    listVersioned: <T>(prefix: string) => store.listVersioned<T>(prefix),
    events: (limit) => store.events(limit),
    auditEntries: (since, limit) => store.auditEntries(since, limit),
    put: guard((key: string, value: unknown) => store.put(key, value)),
    delete: guard((key: string) => store.delete(key)),
    putIf: guard((key: string, value: unknown, expected: string | null) => store.putIf(key, value, expected)),
    deleteIf: guard((key: string, expected: string) => store.deleteIf(key, expected)),
    appendEvent: guard((kind: string, message: string) => store.appendEvent(kind, message)),
    appendAudit: guard((time: string, record: unknown, keep: number) =>
      store.appendAudit(time, record, keep),
    ),
    close: () => store.close(),
  };
}
