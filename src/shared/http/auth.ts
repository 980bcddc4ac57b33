import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { errorStatus, toErrorBody, UnauthorizedError } from '../errors.js';

/**
 * Whether an `Authorization` header carries `Bearer <token>`, compared in constant time. Both sides are hashed
 * first so that neither the comparison nor an early length check tells a caller how long the token is.
 */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(header ?? ''), digest(`Bearer ${token}`));
}

/** Makes every request to `app` carry `Authorization: Bearer <token>`; others get 401 (`unauthorized`). */
export function requireBearerToken(app: FastifyInstance, token: string, what: string): void {
  app.addHook('onRequest', async (req, reply) => {
    if (bearerMatches(req.headers.authorization, token)) return;
    const body = toErrorBody(new UnauthorizedError(`missing or wrong bearer token for ${what}`));
    await reply.status(errorStatus.unauthorized.http).send(body);
  });
}
