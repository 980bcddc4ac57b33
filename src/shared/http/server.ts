import { rmSync } from 'node:fs';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  serializerCompiler,
  validatorCompiler,
} from 'fastify-type-provider-zod';
import { errorStatus, InvalidRequestError, toErrorBody, VmlinkError } from '../errors.js';
import { log } from '../log.js';

/** Where a server listens: `unix:///path.sock` or `http://addr:port`. */
export type ListenAddress = string;

/** A fastify app with zod validation and vmlink's one error mapping (kind -> HTTP status). */
export function createHttpApp(): FastifyInstance {
  const app = Fastify({
    // Request logs are info-level noise: the HTTP layer logs warnings and errors only.
    loggerInstance: log.child({ component: 'http' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit: 16 * 1024 * 1024,
  });
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

/** Starts `app` on a unix socket (replacing a stale socket file, mode 0600) or a TCP address. */
export async function listen(app: FastifyInstance, address: ListenAddress): Promise<void> {
  if (address.startsWith('unix://')) {
    const path = address.slice('unix://'.length);
    rmSync(path, { force: true });
    await app.listen({ path });
    const { chmodSync } = await import('node:fs');
    chmodSync(path, 0o600);
    return;
  }
  const u = new URL(address);
  await app.listen({ host: u.hostname, port: Number(u.port) });
}
