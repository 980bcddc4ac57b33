// Who may call which route: one declarative table, route -> the role it needs and what a scoped token is checked
// against. A route missing from the table is refused to every token (and fails roles.test.ts), so a new route is
// never open by accident.
import { ForbiddenError } from '../../shared/errors.js';
import type { Spec } from '../../spec/schema.js';
import { ROLES, type Role, scopeText, type TokenScopes } from '../wire-access.js';
import type { Principal } from './tokens.js';

/**
 * What a scoped token is checked against on a route:
 * - `vm`, `network`, `host`: the object named by the route's `:name` (a VM also by its host and its NICs' networks);
 * - `any`: nothing (listings, health; scopes limit acting on objects, not what a listing shows);
 * - `unscoped`: the route acts on the whole spec or on access itself, so only a token without scopes may call it.
 */
export type ScopeCheck = 'vm' | 'network' | 'host' | 'any' | 'unscoped';

/** What a route needs: a role (or none: `open`, authenticated by other means) and its scope check. */
export interface RouteRule {
  role: Role | 'open';
  scope: ScopeCheck;
  /** Cancelling a task needs the role that may start it (an operator may stop its own verify, not an apply). */
  taskRole?: true;
  /** The body field naming the object, for the audit trail, where the path names none (never a secret field). */
  bodyObject?: 'name' | 'host';
}

const read = (scope: ScopeCheck = 'any'): RouteRule => ({ role: 'read-only', scope });
const operator = (scope: ScopeCheck): RouteRule => ({ role: 'operator', scope });
const admin = (scope: ScopeCheck = 'unscoped'): RouteRule => ({ role: 'admin', scope });

/** Every route of the controller API, as `METHOD /pattern`, with what it needs. */
export const ROUTE_RULES: Readonly<Record<string, RouteRule>> = {
  'GET /openapi.json': read(),
  'GET /v1/health': read(),
  'GET /v1/doctor': read(),
  'GET /v1/status': read(),
  'GET /v1/events': read(),
  'GET /v1/networks': read(),
  'GET /v1/networks/:name': read('network'),
  'GET /v1/security-groups': read(),
  'GET /v1/load-balancers': read(),
  'GET /v1/vms': read(),
  'GET /v1/vms/:name/console': read('vm'),
  // Websockets (issue 15): anyone may watch; the console stream lets operator+ type (ui/console-proxy.ts).
  'GET /v1/vms/:name/console/stream': read('vm'),
  'GET /v1/events/stream': read(),
  // The web console: its files are public (the app holds no data); a login link carries its maker's role and scopes.
  'GET /ui': { role: 'open', scope: 'any' },
  'GET /ui/': { role: 'open', scope: 'any' },
  'GET /ui/*': { role: 'open', scope: 'any' },
  'GET /ui/login': { role: 'open', scope: 'any' },
  'GET /v1/ui/session': read(),
  'POST /v1/ui/links': read(),
  'POST /v1/ui/logout': read(),
  'GET /v1/devices': read(),
  'GET /v1/hosts/:name/devices': read('host'),
  'GET /v1/vms/:name/snapshots': read('vm'),
  'GET /v1/vms/:name/migrate': read('vm'),
  'GET /v1/pools': read(),
  'GET /v1/volumes': read(),
  'GET /v1/volumes/:pool/:name/snapshots': read(),
  'GET /v1/capacity': read(),
  'GET /v1/ha': read(),
  'GET /v1/balance': read(),
  // Prometheus scrapes with a read-only token (examples/prometheus/prometheus.yml).
  'GET /v1/metrics': read(),
  // Alerts (issue 14): the view is read-only; silences and acks change how the whole site's alerts act.
  'GET /v1/alerts': read(),
  // The last verify's matrix (the web console's topology colours).
  'GET /v1/verify/last': read(),
  // Backups (issue 12): lists and objectives are read-only; running, checking, syncing, pruning and restoring act on
  // several objects (a VM, stores on other hosts): operator without scopes; keys: admin.
  'GET /v1/backups': read(),
  'GET /v1/backups/status': read(),
  'GET /v1/restores': read(),
  // Standbys answer it too: where the active controller is, etcd's members, the hosts' leases.
  'GET /v1/cluster': read(),
  // A task's id is an unguessable UUID that only its starter was given.
  'GET /v1/tasks/:id': read(),
  'DELETE /v1/tasks/:id': { role: 'operator', scope: 'unscoped', taskRole: true },
  // The CA is public; a join carries its own one-time token.
  'GET /v1/pki/ca': { role: 'open', scope: 'any' },
  'POST /v1/join': { role: 'open', scope: 'any', bodyObject: 'host' },

  'POST /v1/plan': operator('unscoped'),
  'POST /v1/verify': operator('unscoped'),
  'POST /v1/verify/throughput': operator('unscoped'),
  // Moves VMs between hosts (live migrations): every VM may be one of them.
  'POST /v1/balance/apply': operator('unscoped'),
  'POST /v1/vms/:name/start': operator('vm'),
  'POST /v1/vms/:name/stop': operator('vm'),
  'POST /v1/vms/:name/migrate': operator('vm'),
  // Moves one of the VM's own disks into a dir pool of its host, as its own volume `<vm>-<disk>`.
  'POST /v1/vms/:name/disks/:disk/move': operator('vm'),
  'POST /v1/vms/:name/exec': operator('vm'),
  'POST /v1/vms/:name/snapshots': operator('vm'),
  'POST /v1/vms/:name/snapshots/:snap/rollback': operator('vm'),
  'DELETE /v1/vms/:name/snapshots/:snap': operator('vm'),
  // Volumes belong to no VM, network or host scope: only an unscoped token may change them.
  'POST /v1/volumes': { ...operator('unscoped'), bodyObject: 'name' },
  'POST /v1/volumes/:pool/:name/resize': operator('unscoped'),
  'POST /v1/volumes/:pool/:name/clone': operator('unscoped'),
  'DELETE /v1/volumes/:pool/:name': operator('unscoped'),
  'POST /v1/volumes/:pool/:name/snapshots': operator('unscoped'),
  'POST /v1/volumes/:pool/:name/snapshots/:snap/rollback': operator('unscoped'),
  'DELETE /v1/volumes/:pool/:name/snapshots/:snap': operator('unscoped'),
  // Reads a file on the pool's host, but only below the agent's import roots (agent/wire-checks.ts).
  'POST /v1/images/import': { ...operator('unscoped'), bodyObject: 'name' },

  'POST /v1/alerts/silences': operator('unscoped'),
  'DELETE /v1/alerts/silences/:id': operator('unscoped'),
  'POST /v1/alerts/ack': operator('unscoped'),

  'POST /v1/backups/run': operator('unscoped'),
  'POST /v1/backups/verify': operator('unscoped'),
  'POST /v1/backups/sync': operator('unscoped'),
  'POST /v1/backups/prune': operator('unscoped'),
  'POST /v1/restores': operator('unscoped'),
  'POST /v1/restores/test': operator('unscoped'),
  'DELETE /v1/restores/:name': operator('unscoped'),

  'POST /v1/apply': admin(),
  // Opens a TCP listener on 127.0.0.1 for the web console.
  'POST /v1/ui/listener': admin(),
  'POST /v1/destroy': admin(),
  'POST /v1/lab/up': admin(),
  'POST /v1/lab/down': admin(),
  // Kills lab processes (agents, QEMU, controllers, etcd members) and restores them.
  'POST /v1/drills': admin(),
  'POST /v1/hosts/:name/join-token': admin('host'),
  'POST /v1/hosts/:name/rotate-cert': admin('host'),
  'PUT /v1/hosts/:name/maintenance': admin('host'),
  'POST /v1/tokens': { ...admin(), bodyObject: 'name' },
  'GET /v1/tokens': admin(),
  'DELETE /v1/tokens/:name': admin(),
  'GET /v1/audit': admin(),
  // A backup key's recovery key is shown once by create; import takes one (it never appears in the audit trail).
  'POST /v1/backups/keys': { ...admin(), bodyObject: 'name' },
  'POST /v1/backups/keys/import': { ...admin(), bodyObject: 'name' },
};

/** Route trees whose every route needs an unscoped admin (controller secrets: values, CHAP and disk keys). */
export const PREFIX_RULES: ReadonlyArray<{ prefix: string; rule: RouteRule }> = [
  { prefix: '/v1/secrets', rule: admin() },
];

/** The task kinds and the role that may start each (see api.ts); others need an admin to cancel. */
const TASK_ROLES: Readonly<Record<string, Role>> = {
  verify: 'operator',
  storage: 'operator',
  backup: 'operator',
};

/** The rule of `method` on the route pattern `url`, or undefined when the table has none. */
export function ruleFor(method: string, url: string): RouteRule | undefined {
  const m = method === 'HEAD' ? 'GET' : method;
  return (
    ROUTE_RULES[`${m} ${url}`] ??
    PREFIX_RULES.find((p) => url === p.prefix || url.startsWith(`${p.prefix}/`))?.rule
  );
}

/** Whether `role` is at least `needed`. */
export const roleAllows = (role: Role, needed: Role) => ROLES.indexOf(role) >= ROLES.indexOf(needed);

/** What authorization needs to know beyond the request: the applied spec, and a task's kind. */
export interface AuthorizationContext {
  spec(): Promise<Spec | undefined>;
  taskKind(id: string): string | undefined;
}

/** The request as authorization sees it. */
export interface RouteCall {
  method: string;
  route: string;
  params: Record<string, string>;
}

/** Throws `ForbiddenError` unless `who` may make `call` under `rule`. */
export async function authorize(
  rule: RouteRule,
  who: Principal,
  call: RouteCall,
  ctx: AuthorizationContext,
): Promise<void> {
  if (rule.role === 'open') return;
  const what = `${call.method} ${call.route}`;
  let needed: Role = rule.role;
  if (rule.taskRole) {
    const kind = call.params.id ? ctx.taskKind(call.params.id) : undefined;
    if (kind) needed = TASK_ROLES[kind] ?? 'admin';
  }
  if (!roleAllows(who.role, needed))
    throw new ForbiddenError(`${describe(who)} may not ${what}: it needs the ${needed} role`, what);
  if (!isScoped(who.scopes) || rule.scope === 'any') return;
  if (rule.scope === 'unscoped')
    throw new ForbiddenError(
      `${describe(who)} is limited to some objects (${scopeText(who.scopes)}), and ${what} acts on the whole spec: it needs a token without scopes`,
      what,
    );
  const name = call.params.name ?? '';
  const why = await outOfScope(rule.scope, name, who.scopes, ctx);
  if (why)
    throw new ForbiddenError(`${describe(who)} may not ${what} on ${name}: ${why}`, `${rule.scope}/${name}`);
}

/** Why the `kind` object `name` is outside `scopes`, or undefined when it is inside. */
async function outOfScope(
  kind: 'vm' | 'network' | 'host',
  name: string,
  scopes: TokenScopes,
  ctx: AuthorizationContext,
): Promise<string | undefined> {
  const dimension = ({ vm: 'vms', network: 'networks', host: 'hosts' } as const)[kind];
  const allowed = scopes[dimension];
  if (allowed && !matchesAny(name, allowed)) return `${kind} ${name} is not in its ${dimension} scope`;
  if (kind !== 'vm' || (!scopes.hosts && !scopes.networks)) return undefined;
  // A VM is also judged by where it runs and what it is attached to, as the applied spec says.
  const vm = (await ctx.spec())?.vms.find((v) => v.name === name);
  if (!vm)
    return `VM ${name} is not in the applied spec, so its host and networks cannot be checked against the scope`;
  if (scopes.hosts && !matchesAny(vm.host, scopes.hosts))
    return `its host ${vm.host} is not in the token's hosts scope`;
  const outside = scopes.networks
    ? vm.nics
        .flatMap((n) => [...(n.network ? [n.network] : []), ...(n.trunk ?? [])])
        .filter((n) => !matchesAny(n, scopes.networks!))
    : [];
  if (outside.length) return `its network ${outside[0]} is not in the token's networks scope`;
  return undefined;
}

/** Whether `name` matches one of `globs` (`*` any run of characters, `?` one character). */
export function matchesAny(name: string, globs: readonly string[]): boolean {
  return globs.some((g) =>
    new RegExp(
      `^${g
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '.*')
        .replace(/\?/g, '.')}$`,
    ).test(name),
  );
}

/** Whether a token is limited to some objects. */
export const isScoped = (s: TokenScopes) => !!(s.hosts || s.networks || s.vms);

const describe = (p: Principal) => `${p.who} (role ${p.role})`;
