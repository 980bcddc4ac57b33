import { request } from 'node:http';
import { z } from 'zod';
import {
  BadResponseError,
  type ErrorBody,
  fromErrorBody,
  TimeoutError,
  UnauthorizedError,
  UnavailableError,
} from '../errors.js';
import { HTTP_REQUEST_TIMEOUT_MS } from '../limits.js';
import {
  checkServerVersion,
  formatVersionHeader,
  localVersion,
  type Protocol,
  VERSION_HEADER,
} from '../version.js';

/** Largest response body a client reads by default: peers are untrusted, so a longer answer is refused. */
export const DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/**
 * For callers that only need to know a peer answered at all (liveness probes): any JSON body within the size bound,
 * used for nothing. Every caller that reads an answer names that answer's own schema instead.
 */
export const AnyAnswerSchema = z.unknown();

// Error bodies are read leniently (a newer peer may name a kind this side does not know; fromErrorBody maps it).
const PeerErrorBodySchema = z.object({
  error: z.object({
    kind: z.string(),
    message: z.string(),
    subject: z.string().optional(),
    issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  }),
});

/** Options of an `HttpClient`. */
export interface HttpClientOptions {
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Default time limit of a call (120 s). */
  timeoutMs?: number;
  /** Who the peer is, for messages ("the controller", "agent of host1"). */
  name?: string;
  /** Largest response body accepted (default `DEFAULT_MAX_RESPONSE_BYTES`). */
  maxResponseBytes?: number;
  /** Send this build's version of the protocol on every request and check the server's (see version.ts). */
  protocol?: Protocol;
}

/** `vms[0].name` for a zod issue path. */
function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out || '(body)';
}

/**
 * A JSON-over-HTTP client for a unix socket (`unix:///path`) or TCP (`http://host:port`) endpoint. Every call names
 * the schema of the answer it expects: the body is parsed with it, so a peer's answer is never trusted unchecked.
 */
export class HttpClient {
  constructor(
    readonly address: string,
    private readonly opts: HttpClientOptions = {},
  ) {}

  /** GET `path`, returning the body parsed with `schema`; errors are rebuilt as typed VmlinkErrors. */
  get<S extends z.ZodType>(path: string, schema: S, timeoutMs?: number): Promise<z.output<S>> {
    return this.call('GET', path, undefined, schema, timeoutMs);
  }

  /** POST `body` as JSON to `path`, returning the answer parsed with `schema`. */
  post<S extends z.ZodType>(
    path: string,
    body: unknown,
    schema: S,
    timeoutMs?: number,
  ): Promise<z.output<S>> {
    return this.call('POST', path, body, schema, timeoutMs);
  }

  /** DELETE `path`, returning the answer parsed with `schema`. */
  delete<S extends z.ZodType>(path: string, schema: S, timeoutMs?: number): Promise<z.output<S>> {
    return this.call('DELETE', path, undefined, schema, timeoutMs);
  }

  private call<S extends z.ZodType>(
    method: string,
    path: string,
    body: unknown,
    schema: S,
    timeoutMs = this.opts.timeoutMs ?? HTTP_REQUEST_TIMEOUT_MS,
  ): Promise<z.output<S>> {
    const who = this.opts.name ?? this.address;
    const route = `${method} ${path.split('?')[0]}`;
    const maxBytes = this.opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const target = this.address.startsWith('unix://')
      ? { socketPath: this.address.slice('unix://'.length), path }
      : (() => {
          const u = new URL(this.address);
          return { host: u.hostname, port: Number(u.port), path };
        })();
    return new Promise<z.output<S>>((resolve, reject) => {
      const req = request(
        {
          ...target,
          method,
          headers: {
            accept: 'application/json',
            ...(payload === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
            ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}),
            ...(this.opts.protocol
              ? {
                  [VERSION_HEADER[this.opts.protocol]]: formatVersionHeader(localVersion(this.opts.protocol)),
                }
              : {}),
          },
        },
        (res) => {
          const status = res.statusCode ?? 500;
          const declared = Number(res.headers['content-length']);
          const tooLarge = () =>
            new BadResponseError(`${who} answered ${route} with more than ${maxBytes} bytes; refused`, route);
          if (declared > maxBytes) {
            res.destroy();
            reject(tooLarge());
            return;
          }
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (d: Buffer) => {
            size += d.length;
            if (size > maxBytes) {
              // Stop reading at once: an unbounded answer must not fill this process's memory.
              res.destroy();
              reject(tooLarge());
              return;
            }
            chunks.push(d);
          });
          res.on('error', (e) =>
            reject(new UnavailableError(`${who} broke off ${route}: ${e.message}`, who, e)),
          );
          res.on('end', () => {
            const data = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = data ? JSON.parse(data) : undefined;
            } catch {
              reject(
                new BadResponseError(
                  `${who} answered ${route} (${status}) with a non-JSON body: ${data.slice(0, 200)}`,
                  route,
                ),
              );
              return;
            }
            if (status >= 400) {
              const b = PeerErrorBodySchema.safeParse(parsed);
              if (b.success) reject(fromErrorBody(b.data as ErrorBody));
              else if (status === 401)
                reject(new UnauthorizedError(`${who} refused ${route}: not authorized`));
              else reject(new UnavailableError(`${who} answered ${route} with ${status}`, who));
              return;
            }
            // A peer of another protocol version is named as such before its answer is judged by our schema.
            const p = this.opts.protocol;
            const mismatch = p && checkServerVersion(p, res.headers[VERSION_HEADER[p]], who);
            if (mismatch) {
              reject(mismatch);
              return;
            }
            const r = schema.safeParse(parsed);
            if (r.success) {
              resolve(r.data);
              return;
            }
            const issue = r.error.issues[0]!;
            reject(
              new BadResponseError(
                `${who} answered ${route} with a body that breaks the contract: ${fieldPath(issue.path)}: ${issue.message}`,
                `${route} ${fieldPath(issue.path)}`,
              ),
            );
          });
        },
      );
      req.setTimeout(timeoutMs, () => {
        req.destroy(
          new TimeoutError(`${who} did not answer ${route} within ${Math.round(timeoutMs / 1000)} s`),
        );
      });
      req.on('error', (e) => {
        if (e instanceof TimeoutError) reject(e);
        else reject(new UnavailableError(`cannot reach ${who} at ${this.address}: ${e.message}`, who, e));
      });
      req.end(payload);
    });
  }
}
