import { z } from 'zod';

/** One problem found in a spec: where it is (dotted path such as `vms[1].nics[0].ip`) and what is wrong. */
export interface SpecIssue {
  path: string;
  message: string;
}

/** Error kinds, each mapped to one HTTP status and one CLI exit code in `errorStatus`. */
export const ErrorKinds = [
  'invalid',
  'not-found',
  'conflict',
  'invalid-state',
  'unsupported',
  'exec',
  'timeout',
  'unavailable',
  'unauthorized',
  'forbidden',
  'bad-response',
  'fenced',
  'not-active',
  'key-mismatch',
  'store-full',
  'corrupt',
  'internal',
] as const;
/** One of `ErrorKinds`. */
export type ErrorKind = (typeof ErrorKinds)[number];

/** Base class of every error vmlink raises on purpose; `subject` names the spec path or object concerned. */
export class VmlinkError extends Error {
  readonly kind: ErrorKind;
  readonly subject: string | undefined;
  constructor(kind: ErrorKind, message: string, opts: { subject?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.kind = kind;
    this.subject = opts.subject;
  }
}

/** The spec is invalid; carries every issue found so an operator can fix them all at once. */
export class InvalidSpecError extends VmlinkError {
  readonly issues: SpecIssue[];
  constructor(issues: SpecIssue[], source?: string) {
    const head = source ? `${source}: ` : '';
    super(
      'invalid',
      `${head}spec is invalid (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${issues
        .map((i) => `  ${i.path || '(root)'}: ${i.message}`)
        .join('\n')}`,
      source === undefined ? {} : { subject: source },
    );
    this.issues = issues;
  }
}

/** A request (not a spec) is malformed. */
export class InvalidRequestError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('invalid', message, subject === undefined ? {} : { subject });
  }
}

/** A named object does not exist. */
export class NotFoundError extends VmlinkError {
  constructor(what: string, name: string) {
    super('not-found', `${what} ${JSON.stringify(name)} not found`, { subject: `${what}/${name}` });
  }
}

/** The request conflicts with existing state (for example a name already in use). */
export class ConflictError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('conflict', message, subject === undefined ? {} : { subject });
  }
}

/** An action was asked of an object in the wrong state, e.g. `stop requires running`. */
export class InvalidStateError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('invalid-state', message, subject === undefined ? {} : { subject });
  }
}

/** The host lacks a capability the request needs; the message names the remedy. */
export class UnsupportedError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('unsupported', message, subject === undefined ? {} : { subject });
  }
}

/** A peer (agent, controller, QEMU) could not be reached. */
export class UnavailableError extends VmlinkError {
  constructor(message: string, subject?: string, cause?: unknown) {
    super('unavailable', message, { ...(subject === undefined ? {} : { subject }), cause });
  }
}

/** Something did not happen within its time limit. */
export class TimeoutError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('timeout', message, subject === undefined ? {} : { subject });
  }
}

/** A request carried no bearer token or a wrong one (a TCP listener of the controller or an agent). */
export class UnauthorizedError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('unauthorized', message, subject === undefined ? {} : { subject });
  }
}

/** The caller is known but its role or scope does not allow the request (API tokens). */
export class ForbiddenError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('forbidden', message, subject === undefined ? {} : { subject });
  }
}

/** A peer answered with something that breaks its contract (wrong shape, too large): never trusted, never used. */
export class BadResponseError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('bad-response', message, subject === undefined ? {} : { subject });
  }
}

/**
 * A cluster agent refused to start a VM or open its disks: it does not hold its lease, or etcd's owner record of the
 * VM names another host or a newer fencing token.
 */
export class FencedError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('fenced', message, subject === undefined ? {} : { subject });
  }
}

/** A standby controller was asked to act: `active` says where the active one answers (when one is known). */
export class NotActiveError extends VmlinkError {
  constructor(
    message: string,
    readonly active?: string,
  ) {
    super('not-active', message, active === undefined ? {} : { subject: active });
  }
}

/** A backup key that is not the one a store or snapshot was made with (docs/backup.md): nothing was written. */
export class KeyMismatchError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('key-mismatch', message, subject === undefined ? {} : { subject });
  }
}

/** A backup store's filesystem is full: the backup stopped cleanly, earlier snapshots are intact. */
export class StoreFullError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('store-full', message, subject === undefined ? {} : { subject });
  }
}

/** Stored data failed its check (a chunk's checksum or authentication, a manifest's signature); `subject` names it. */
export class CorruptDataError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('corrupt', message, subject === undefined ? {} : { subject });
  }
}

/** HTTP status and CLI exit code of each error kind: the one place this mapping lives. */
export const errorStatus: Record<ErrorKind, { http: number; exit: number }> = {
  invalid: { http: 422, exit: 2 },
  'not-found': { http: 404, exit: 3 },
  conflict: { http: 409, exit: 4 },
  'invalid-state': { http: 409, exit: 4 },
  unsupported: { http: 422, exit: 5 },
  exec: { http: 500, exit: 6 },
  timeout: { http: 504, exit: 7 },
  unavailable: { http: 503, exit: 8 },
  unauthorized: { http: 401, exit: 9 },
  forbidden: { http: 403, exit: 11 },
  'bad-response': { http: 502, exit: 10 },
  fenced: { http: 409, exit: 12 },
  // 421 Misdirected Request: the right server is another one (its address is the error's subject).
  'not-active': { http: 421, exit: 13 },
  'key-mismatch': { http: 409, exit: 14 },
  // 507 Insufficient Storage.
  'store-full': { http: 507, exit: 15 },
  corrupt: { http: 500, exit: 16 },
  internal: { http: 500, exit: 1 },
};

/** JSON body of an error response, shared by server and clients (and listed in the OpenAPI documents). */
export const ErrorBodySchema = z.object({
  error: z.object({
    kind: z.enum(ErrorKinds),
    message: z.string(),
    subject: z.string().optional(),
    issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  }),
});
/** JSON body of an error response. */
export type ErrorBody = z.infer<typeof ErrorBodySchema>;

/** Serialises any thrown value into an `ErrorBody`. */
export function toErrorBody(err: unknown): ErrorBody {
  if (err instanceof VmlinkError) {
    return {
      error: {
        kind: err.kind,
        message: err.message,
        ...(err.subject === undefined ? {} : { subject: err.subject }),
        ...(err instanceof InvalidSpecError ? { issues: err.issues } : {}),
      },
    };
  }
  return { error: { kind: 'internal', message: err instanceof Error ? err.message : String(err) } };
}

/** Rebuilds a typed error from an `ErrorBody` received over HTTP. */
export function fromErrorBody(body: ErrorBody): VmlinkError {
  const e = body.error;
  if (e.kind === 'invalid' && e.issues) return new InvalidSpecError(e.issues);
  if (e.kind === 'not-active') return new NotActiveError(e.message, e.subject);
  return new VmlinkError(
    ErrorKinds.includes(e.kind) ? e.kind : 'internal',
    e.message,
    e.subject === undefined ? {} : { subject: e.subject },
  );
}
