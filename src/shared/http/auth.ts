import { createHash, timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { errorStatus, toErrorBody, UnauthorizedError } from '../errors.js';
import { type CertRole, peerMismatch, tlsFailureReason } from '../tls.js';

/**
 * Whether an `Authorization` header carries `Bearer <token>`, compared in constant time. Both sides are hashed
 * first so that neither the comparison nor an early length check tells a caller how long the token is.
 */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(header ?? ''), digest(`Bearer ${token}`));
}

/**
 * Why the client on `socket` is not `expected` (no TLS, no certificate, one of another CA, another role or name), or
 * undefined when it is.
 */
export function clientCertRefusal(
  socket: TLSSocket,
  expected: { role: CertRole; name: string },
): string | undefined {
  if (!socket.encrypted) return 'the connection is not TLS';
  const cert = socket.getPeerCertificate();
  if (!cert?.subject) return 'it presented no client certificate';
  if (!socket.authorized) {
    const e = socket.authorizationError as unknown as
      | { code?: string; message?: string }
      | string
      | undefined;
    const err = typeof e === 'string' ? { code: e, message: e } : (e ?? {});
    return (
      tlsFailureReason(err) ?? `its certificate is not trusted (${err.message ?? err.code ?? 'unknown'})`
    );
  }
  return peerMismatch(cert, expected);
}

/** Makes every request to `app` come from a client whose certificate is `expected`'s; others get 401 saying why. */
export function requireClientCert(
  app: FastifyInstance,
  expected: { role: CertRole; name: string },
  what: string,
): void {
  app.addHook('onRequest', async (req, reply) => {
    const why = clientCertRefusal(req.raw.socket as TLSSocket, expected);
    if (!why) return;
    const body = toErrorBody(new UnauthorizedError(`${what} refused the client: ${why}`, what));
    await reply.status(errorStatus.unauthorized.http).send(body);
  });
}
