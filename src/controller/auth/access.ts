// The controller API's access control: who is calling (the root-only unix socket, the bootstrap token, an API
// token), whether the role table lets them make this call, and the audit entry of every mutating call.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type ErrorKind, errorStatus, ForbiddenError, UnauthorizedError } from '../../shared/errors.js';
import { bearerMatches } from '../../shared/http/auth.js';
import { AUTH_HEADER_MAX_CHARS } from '../../shared/limits.js';
import { log } from '../../shared/log.js';
import type { UiSessions } from '../ui/sessions.js';
import type { AuditLog } from './audit.js';
import { type AuthorizationContext, authorize, ruleFor } from './roles.js';
import { sessionCaller } from './session-auth.js';
import { isApiToken, type Principal, type TokenStore } from './tokens.js';

/** Where the API is served: the local root-only socket (its callers are root, hence admin) or TCP with tokens. */
export type Listener = 'unix-socket' | 'tcp';

/** What access control needs. */
export interface AccessOptions {
  listener: Listener;
  /** `VMLINK_TOKEN` of the TCP listener: an admin credential to bootstrap API tokens with. */
  bootstrapToken?: string | undefined;
  tokens: TokenStore;
  audit: AuditLog;
  context: AuthorizationContext;
  /** Browser sessions (the web console): their cookie is a credential on the TCP listener. */
  sessions?: UiSessions | undefined;
  /** Resolves when task `id` has ended, with how (so the call that started it is audited with its outcome too). */
  taskEnded?: (id: string) => Promise<TaskEnd>;
}

/** How a task ended, as the audit trail records it. */
export interface TaskEnd {
  state: 'succeeded' | 'failed' | 'cancelled';
  errorKind?: string;
  durationMs: number;
}

/** The caller on the unix socket: the socket is mode 0600 and owned by root, so only root can connect. */
const LOCAL_SOCKET: Principal = { who: 'local-socket', role: 'admin', scopes: {} };
const BOOTSTRAP: Principal = { who: 'bootstrap-token', role: 'admin', scopes: {} };

const principals = new WeakMap<FastifyRequest, Principal>();
const routeLists = new WeakMap<FastifyInstance, string[]>();
const errorKinds = new WeakMap<FastifyRequest, string>();
const startedTasks = new WeakMap<FastifyRequest, string>();

/** The authenticated caller of `req` (undefined on open routes of the TCP listener). */
export const principalOf = (req: FastifyRequest): Principal | undefined => principals.get(req);

/** Every route of `app` added after access control, as `METHOD /pattern` (what roles.test.ts walks). */
export const routesOf = (app: FastifyInstance): readonly string[] => routeLists.get(app) ?? [];

/** Calls that change something: every method but GET and HEAD. */
const mutating = (method: string) => method !== 'GET' && method !== 'HEAD';

/**
 * Authenticates and authorizes every request to `app` before its body is read (401: no or bad credential; 403: role
 * or scope too narrow, or a route without an entry in the role table), and audits every mutating call.
 */
export function installAccessControl(app: FastifyInstance, o: AccessOptions): void {
  const routes: string[] = [];
  routeLists.set(app, routes);
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) {
      // A route the role table does not know would be refused to everyone: refuse to start with it instead.
      if (!ruleFor(method, r.url))
        throw new Error(
          `route ${method} ${r.url} has no entry in the role table (src/controller/auth/roles.ts)`,
        );
      routes.push(`${method} ${r.url}`);
    }
  });
  app.addHook('onRequest', async (req) => {
    const route = req.routeOptions.url;
    const rule = route === undefined ? undefined : ruleFor(req.method, route);
    if (o.listener === 'tcp' && rule?.role === 'open') return;
    // A bearer token wins over a cookie; without one, a browser session's cookie (CSRF-checked) may stand in.
    const session =
      o.listener === 'tcp' && o.sessions && !req.headers.authorization
        ? sessionCaller(req, o.sessions)
        : undefined;
    const who =
      o.listener === 'unix-socket'
        ? LOCAL_SOCKET
        : (session ?? (await authenticate(req.headers.authorization, o)));
    principals.set(req, who);
    // An authenticated caller of a path no route serves gets the 404 that follows.
    if (route === undefined) return;
    if (!rule)
      throw new ForbiddenError(
        `${req.method} ${route} has no entry in the controller's role table, so no one may call it`,
        route,
      );
    await authorize(
      rule,
      who,
      { method: req.method, route, params: (req.params ?? {}) as Record<string, string> },
      o.context,
    );
  });

  app.addHook('onSend', async (req, reply, payload) => {
    // The task a call started, so its outcome is audited too.
    if (
      reply.statusCode === 202 &&
      mutating(req.method) &&
      typeof payload === 'string' &&
      payload.length < 4096
    )
      try {
        const id = (JSON.parse(payload) as { taskId?: unknown }).taskId;
        if (typeof id === 'string') startedTasks.set(req, id);
      } catch {
        // Not a task answer.
      }
    // The error kind of a refusal or failure, for the audit entry (never the body itself).
    if (
      reply.statusCode >= 400 &&
      mutating(req.method) &&
      typeof payload === 'string' &&
      payload.length < 65_536
    )
      try {
        const kind = (JSON.parse(payload) as { error?: { kind?: unknown } }).error?.kind;
        if (typeof kind === 'string') errorKinds.set(req, kind);
      } catch {
        // Not vmlink's error body: the status code says enough.
      }
    return payload;
  });

  app.addHook('onResponse', async (req, reply) => {
    if (!mutating(req.method)) return;
    const who = principals.get(req);
    const params = (req.params ?? {}) as Record<string, unknown>;
    const route = req.routeOptions.url;
    const field = route === undefined ? undefined : ruleFor(req.method, route)?.bodyObject;
    // The body is read only for the one field the role table names; a refused request has no body at all.
    const body = field ? (req.body as Record<string, unknown> | undefined) : undefined;
    // A volume is named by its pool too (`pool/name`, `pool/name@snap`); a VM snapshot as `vm@snap`.
    const named = typeof params.pool === 'string' ? `${params.pool}/${String(params.name)}` : params.name;
    const object =
      typeof params.snap === 'string'
        ? `${String(named)}@${params.snap}`
        : (named ?? params.id ?? bodyObject(body, field));
    const errorKind = errorKinds.get(req);
    const task = startedTasks.get(req);
    const call = {
      who: who?.who ?? 'anonymous',
      ...(who ? { role: who.role } : {}),
      remote: o.listener === 'unix-socket' ? 'unix-socket' : (req.ip ?? 'unknown'),
      method: req.method,
      route: route ?? req.url.split('?')[0]!,
      ...(typeof object === 'string' ? { object } : {}),
      ...(task ? { task } : {}),
    };
    const record = async (entry: Parameters<AuditLog['record']>[0]) => {
      try {
        await o.audit.record(entry);
      } catch (err) {
        // The call has been answered; a full disk must not crash the controller, but it must be seen.
        log.error({ err, method: req.method, route: call.route }, 'cannot write the audit entry');
      }
    };
    await record({
      ...call,
      status: reply.statusCode,
      ...(errorKind ? { errorKind } : {}),
      durationMs: Math.round(reply.elapsedTime * 10) / 10,
    });
    // The answer was only "accepted": what the call did is the task's outcome, recorded when it ends.
    if (task && o.taskEnded)
      void o.taskEnded(task).then(
        (end) =>
          record({
            ...call,
            status: end.errorKind ? (errorStatus[end.errorKind as ErrorKind]?.http ?? 500) : 200,
            ...(end.errorKind ? { errorKind: end.errorKind } : {}),
            durationMs: end.durationMs,
            outcome: end.state,
          }),
        (err: unknown) => log.error({ err, task }, 'cannot audit the outcome of a task'),
      );
  });
}

/** The object a body names for the audit trail: its `field`, with its pool when it names a volume (`pool/name`). */
function bodyObject(body: Record<string, unknown> | undefined, field: string | undefined): unknown {
  const v = field ? body?.[field] : undefined;
  return field === 'name' && typeof body?.pool === 'string' && typeof v === 'string'
    ? `${body.pool}/${v}`
    : v;
}

/** The principal of an `Authorization` header on the TCP listener, or `UnauthorizedError` saying what is wrong. */
async function authenticate(header: string | undefined, o: AccessOptions): Promise<Principal> {
  if (!header)
    throw new UnauthorizedError(
      'missing bearer token: send Authorization: Bearer TOKEN (the CLI sends VMLINK_TOKEN)',
    );
  if (header.length > AUTH_HEADER_MAX_CHARS || !header.startsWith('Bearer '))
    throw new UnauthorizedError('malformed Authorization header (expected Bearer TOKEN)');
  if (o.bootstrapToken && bearerMatches(header, o.bootstrapToken)) return BOOTSTRAP;
  const bearer = header.slice('Bearer '.length);
  if (isApiToken(bearer)) return o.tokens.authenticate(bearer);
  throw new UnauthorizedError('wrong bearer token');
}
