// `GET /v1/verify/last`: the matrix of the last verify this controller ran (the web console colours its topology
// and shows its matrix with it). Kept in memory: a restarted or newly active controller has none until the next
// verify, and says so (404) rather than show a stale matrix from another controller's view.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { VmlinkError } from '../shared/errors.js';
import { answers } from './api-answers.js';
import type { VerifyResult } from './verify.js';
import { VerifyResultSchema } from './wire.js';

/** No verify has finished on this controller since it started. */
export class NoVerifyYetError extends VmlinkError {
  constructor() {
    super('not-found', 'no verify has run on this controller since it started: run `vmlink verify`', {
      subject: 'verify/last',
    });
  }
}

/** The last verify's result, set when a verify finishes. */
export class LastVerify {
  private result: VerifyResult | undefined;

  set(r: VerifyResult): void {
    this.result = r;
  }

  get(): VerifyResult {
    if (!this.result) throw new NoVerifyYetError();
    return this.result;
  }
}

/** Registers `GET /v1/verify/last` (role read-only: auth/roles.ts). */
export function addVerifyLastRoute(app: FastifyInstance, last: LastVerify): void {
  app.withTypeProvider<ZodTypeProvider>().get(
    '/v1/verify/last',
    {
      schema: {
        summary: 'The matrix of the last verify this controller ran (404 before the first)',
        response: answers(VerifyResultSchema),
      },
    },
    async () => last.get(),
  );
}
/** The cells of a verify by result: as expected, not as expected, or not measured (matrix and storage cells). */
export function verifyCells(r: VerifyResult): Record<'ok' | 'mismatch' | 'unmeasured', number> {
  const counts = { ok: 0, mismatch: 0, unmeasured: 0 };
  for (const c of [...r.cells, ...(r.storage ?? [])])
    counts[c.ok ? 'ok' : 'unmeasured' in c && c.unmeasured ? 'unmeasured' : 'mismatch']++;
  return counts;
}
