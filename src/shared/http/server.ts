import { rmSync } from 'node:fs';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  serializerCompiler,
  validatorCompiler,
} from 'fastify-type-provider-zod';
import { ConflictError, errorStatus, InvalidRequestError, toErrorBody, VmlinkError } from '../errors.js';
import { HTTP_BODY_MAX_BYTES } from '../limits.js';
import { log } from '../log.js';

/** Where a server listens: `unix:///path.sock`, `http://addr:port` or (with TLS options) `https://addr:port`. */
export type ListenAddress = string;

/** TLS of a server: its key and certificate, the CA, and whether clients must present a certificate. */
export interface ServerTls {
  key: string;
  cert: string;
  ca: string;
  /** Ask clients for a certificate chained to `ca` (checked per request, so a refusal is an answer, not a reset). */
  requestCert?: boolean;
}

/** A fastify app with zod validation and vmlink's one error mapping (kind -> HTTP status); HTTPS with `tls`. */
export function createHttpApp(tls?: ServerTls): FastifyInstance {
  const app = Fastify({
    ...(tls
      ? {
          https: {
            key: tls.key,
            cert: tls.cert,
            ca: tls.ca,
            requestCert: tls.requestCert ?? false,
            // Judged per request by `requireClientCert`, which answers 401 naming why.
            rejectUnauthorized: false,
            minVersion: 'TLSv1.3' as const,
          },
        }
      : {}),
    // Request logs are info-level noise: the HTTP layer logs warnings and errors only.
    loggerInstance: log.child({ component: 'http' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit: HTTP_BODY_MAX_BYTES,
  }) as unknown as FastifyInstance;
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler((err, _req, reply) => {
    let e: unknown = err;
    if (hasZodFastifySchemaValidationErrors(err)) {
      e = new InvalidRequestError(
        `invalid request: ${err.validation.map((v) => `${v.instancePath || '/'} ${v.message}`).join('; ')}`,
      );
    } else if (
      !(err instanceof VmlinkError) &&
      typeof (err as { statusCode?: number }).statusCode === 'number' &&
      (err as { statusCode: number }).statusCode < 500
    ) {
      e = new InvalidRequestError((err as Error).message);
    }
    const body = toErrorBody(e);
    if (body.error.kind === 'internal') log.error({ err }, 'internal error');
    void reply.status(errorStatus[body.error.kind].http).send(body);
  });
  return app;
}

/** Whether something accepts connections on the unix socket `path`. */
async function socketAnswers(path: string): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Starts `app` on a unix socket (refusing one a live server holds, replacing a stale one; mode 0600) or TCP. */
export async function listen(app: FastifyInstance, address: ListenAddress): Promise<void> {
  if (address.startsWith('unix://')) {
    const path = address.slice('unix://'.length);
    // A socket that answers belongs to a running server: never steal it; only a stale one is replaced.
    if (await socketAnswers(path))
      throw new ConflictError(`${path} is in use by a running server; stop it first`, path);
    rmSync(path, { force: true });
    await app.listen({ path });
    const { chmodSync } = await import('node:fs');
    chmodSync(path, 0o600);
    return;
  }
  const u = new URL(address);
  await app.listen({ host: u.hostname, port: Number(u.port) });
}
