import { type Agent as HttpAgent, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { PeerCertificate } from 'node:tls';
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
import { tlsFailureReason } from '../tls.js';
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

/**
 * A peer answered with an HTTP error status and a body that is not vmlink's error body (e.g. 404 for a route an
 * older peer does not have): the status is kept so that a caller can fall back.
 */
export class HttpStatusError extends UnavailableError {
  constructor(
    message: string,
    subject: string,
    readonly status: number,
  ) {
    super(message, subject);
  }
}

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
  /** TLS for `https://` and `https+unix://` addresses (required there). */
  tls?: ClientTls;
}

/** How a client speaks TLS: the CA it trusts, its own certificate, and who the server must be. */
export interface ClientTls {
  /** The CA the server's certificate must chain to (PEM). */
  ca: string;
  /** Client key and certificate (PEM), for servers that require one. */
  key?: string;
  cert?: string;
  /** Why the server's certificate (already chained to `ca`) is not the expected peer's, or undefined when it is. */
  checkPeer?: (cert: PeerCertificate) => string | undefined;
  /** Connections to reuse (keep-alive), made with the same TLS options. */
  agent?: HttpAgent;
}

/** Marks a call whose answer is raw bytes (`getBytes`). */
const BYTES = Symbol('bytes');

/** The server's certificate chained to the CA but is not the expected peer's. */
class PeerRefusedError extends Error {}

/** Where and how an address is reached: `unix:///p`, `https+unix:///p`, `http://h:p`, `https://h:p`. */
export function parseAddress(address: string): {
  tls: boolean;
  socketPath?: string;
  host?: string;
  port?: number;
} {
  for (const [prefix, tls] of [
    ['unix://', false],
    ['https+unix://', true],
  ] as const)
    if (address.startsWith(prefix)) return { tls, socketPath: address.slice(prefix.length) };
  const u = new URL(address);
  return { tls: u.protocol === 'https:', host: u.hostname, port: Number(u.port) };
}

/** `vms[0].name` for a zod issue path. */
function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out || '(body)';
}

/**
 * A JSON-over-HTTP(S) client for a unix socket (`unix:///path`, or `https+unix:///path` with TLS over it) or TCP
 * (`http://host:port`, `https://host:port`) endpoint. Every call names
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

  /** PUT `body` as JSON to `path`, returning the answer parsed with `schema`. */
  put<S extends z.ZodType>(path: string, body: unknown, schema: S, timeoutMs?: number): Promise<z.output<S>> {
    return this.call('PUT', path, body, schema, timeoutMs);
  }

  /** DELETE `path`, returning the answer parsed with `schema`. */
  delete<S extends z.ZodType>(path: string, schema: S, timeoutMs?: number): Promise<z.output<S>> {
    return this.call('DELETE', path, undefined, schema, timeoutMs);
  }

  /** PUT raw bytes (`application/octet-stream`) to `path`, returning the JSON answer parsed with `schema`. */
  putBytes<S extends z.ZodType>(
    path: string,
    data: Buffer,
    schema: S,
    timeoutMs?: number,
  ): Promise<z.output<S>> {
    return this.call('PUT', path, data, schema, timeoutMs);
  }

  /**
   * GET `path` whose answer is raw bytes (`application/octet-stream`), at most `maxBytes` of them (default the
   * client's bound); an error answer is JSON as elsewhere.
   */
  getBytes(path: string, maxBytes?: number, timeoutMs?: number): Promise<Buffer> {
    return this.call('GET', path, undefined, BYTES, timeoutMs, maxBytes) as Promise<Buffer>;
  }

  private call<S extends z.ZodType>(
    method: string,
    path: string,
    body: unknown,
    schema: S | typeof BYTES,
    timeoutMs = this.opts.timeoutMs ?? HTTP_REQUEST_TIMEOUT_MS,
    maxResponseBytes?: number,
  ): Promise<z.output<S>> {
    const who = this.opts.name ?? this.address;
    const route = `${method} ${path.split('?')[0]}`;
    const maxBytes = maxResponseBytes ?? this.opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    const binary = Buffer.isBuffer(body);
    const payload = body === undefined ? undefined : binary ? body : JSON.stringify(body);
    const { tls: useTls, ...target } = parseAddress(this.address);
    const tls = this.opts.tls;
    if (useTls && !tls)
      return Promise.reject(
        new UnauthorizedError(`no CA to check ${who} at ${this.address} against; TLS needs one`, who),
      );
    const tlsOptions = useTls
      ? {
          ca: tls!.ca,
          ...(tls!.key && tls!.cert ? { key: tls!.key, cert: tls!.cert } : {}),
          ...(tls!.agent ? { agent: tls!.agent } : {}),
          // Node has checked the chain to `ca` when this runs; who the peer is comes from its certificate, not
          // from the address (a lab host is reached through a relay socket).
          checkServerIdentity: (_host: string, cert: PeerCertificate) => {
            const why = tls!.checkPeer?.(cert);
            return why ? new PeerRefusedError(why) : undefined;
          },
          servername: target.host && !/^[\d.:]+$/.test(target.host) ? target.host : 'vmlink',
        }
      : {};
    const request = useTls ? httpsRequest : httpRequest;
    let settled = () => {};
    return new Promise<z.output<S>>((resolve, reject) => {
      const req = request(
        {
          ...target,
          ...tlsOptions,
          path,
          method,
          headers: {
            accept: schema === BYTES ? 'application/octet-stream, application/json' : 'application/json',
            ...(payload === undefined
              ? {}
              : {
                  'content-type': binary ? 'application/octet-stream' : 'application/json',
                  'content-length': Buffer.byteLength(payload),
                }),
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
            const bytes = Buffer.concat(chunks);
            if (schema === BYTES && status < 400) {
              const p = this.opts.protocol;
              const mismatch = p && checkServerVersion(p, res.headers[VERSION_HEADER[p]], who);
              if (mismatch) reject(mismatch);
              else if (!String(res.headers['content-type'] ?? '').startsWith('application/octet-stream'))
                reject(
                  new BadResponseError(`${who} answered ${route} without application/octet-stream`, route),
                );
              else resolve(bytes as z.output<S>);
              return;
            }
            const data = bytes.toString('utf8');
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
              else reject(new HttpStatusError(`${who} answered ${route} with ${status}`, who, status));
              return;
            }
            // A peer of another protocol version is named as such before its answer is judged by our schema.
            const p = this.opts.protocol;
            const mismatch = p && checkServerVersion(p, res.headers[VERSION_HEADER[p]], who);
            if (mismatch) {
              reject(mismatch);
              return;
            }
            const r = (schema as S).safeParse(parsed);
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
      // A deadline for the whole call, not the socket's idle timer: that one starts only once a TLS socket has
      // connected, so a handshake that hangs (a relay whose far side is cut) would take twice as long.
      const deadline = setTimeout(() => {
        req.destroy(
          new TimeoutError(`${who} did not answer ${route} within ${Math.round(timeoutMs / 1000)} s`),
        );
      }, timeoutMs);
      deadline.unref(); // the request's socket keeps the process alive, not its timer
      settled = () => clearTimeout(deadline);
      req.on('error', (e) => {
        const why = e instanceof PeerRefusedError ? e.message : tlsFailureReason(e as NodeJS.ErrnoException);
        if (e instanceof TimeoutError) reject(e);
        else if (useTls && why)
          reject(new UnauthorizedError(`refused TLS with ${who} at ${this.address}: ${why}`, who));
        else reject(new UnavailableError(`cannot reach ${who} at ${this.address}: ${e.message}`, who, e));
      });
      req.end(payload);
    }).finally(() => settled());
  }
}
