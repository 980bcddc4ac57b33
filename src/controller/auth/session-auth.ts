// The browser's credential on the TCP listener: the web console's session cookie (ui/sessions.ts), accepted for the
// role it carries, with CSRF defences on top of SameSite=Strict: a call that changes something must come from the
// console's own origin (Origin header) and carry a header a cross-site form cannot send; a websocket upgrade (which
// cannot carry custom headers) must come from the console's own origin.
import type { FastifyRequest } from 'fastify';
import { ForbiddenError } from '../../shared/errors.js';
import { sessionCookie, type UiSessions } from '../ui/sessions.js';
import type { Principal } from './tokens.js';

/** The header every non-GET call of a browser session must carry, with the value `1`. */
export const CSRF_HEADER = 'x-vmlink-csrf';

/**
 * The principal of `req`'s session cookie, or undefined when it has none (then the bearer token is asked for).
 * Throws `UnauthorizedError` for a dead session and `ForbiddenError` for a cross-site or header-less write.
 */
export function sessionCaller(req: FastifyRequest, sessions: UiSessions): Principal | undefined {
  const id = sessionCookie(req.headers.cookie);
  if (id === undefined) return undefined;
  const principal = sessions.authenticate(id);
  const write = req.method !== 'GET' && req.method !== 'HEAD';
  const upgrade = String(req.headers.upgrade ?? '').toLowerCase() === 'websocket';
  if (write || upgrade) {
    const what = `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`;
    const own = `https://${req.headers.host ?? ''}`;
    const origin = req.headers.origin;
    if (origin !== own)
      throw new ForbiddenError(
        `${what} with a browser session must come from the console's own page (Origin ${origin ?? 'missing'}, expected ${own})`,
        what,
      );
    if (write && req.headers[CSRF_HEADER] !== '1')
      throw new ForbiddenError(
        `${what} with a browser session must carry the header X-Vmlink-Csrf: 1 (cross-site request refused)`,
        what,
      );
  }
  return principal;
}
