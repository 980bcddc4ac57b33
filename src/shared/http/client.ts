import { request } from 'node:http';
import { type ErrorBody, fromErrorBody, TimeoutError, UnavailableError } from '../errors.js';
import {
  checkServerVersion,
  formatVersionHeader,
  localVersion,
  type Protocol,
  VERSION_HEADER,
} from '../version.js';

/** A JSON-over-HTTP client for a unix socket (`unix:///path`) or TCP (`http://host:port`) endpoint. */
export class HttpClient {
  constructor(
    readonly address: string,
    /** `protocol`: send this build's version of it on every request and check the server's (see version.ts). */
    private readonly opts: { token?: string; timeoutMs?: number; name?: string; protocol?: Protocol } = {},
  ) {}

  /** GET `path`, returning the decoded JSON body; errors are rebuilt as typed VmlinkErrors. */
  get<T>(path: string, timeoutMs?: number): Promise<T> {
    return this.call<T>('GET', path, undefined, timeoutMs);
  }

  /** POST `body` as JSON to `path`. */
  post<T>(path: string, body: unknown = {}, timeoutMs?: number): Promise<T> {
    return this.call<T>('POST', path, body, timeoutMs);
  }

  /** DELETE `path`. */
  delete<T>(path: string, timeoutMs?: number): Promise<T> {
    return this.call<T>('DELETE', path, undefined, timeoutMs);
  }

  private call<T>(
    method: string,
    path: string,
    body: unknown,
    timeoutMs = this.opts.timeoutMs ?? 120_000,
  ): Promise<T> {
    const who = this.opts.name ?? this.address;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const target = this.address.startsWith('unix://')
      ? { socketPath: this.address.slice('unix://'.length), path }
      : (() => {
          const u = new URL(this.address);
          return { host: u.hostname, port: Number(u.port), path };
        })();
    return new Promise<T>((resolve, reject) => {
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
          let data = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            data += d;
          });
          res.on('end', () => {
            let parsed: unknown;
            try {
              parsed = data ? JSON.parse(data) : undefined;
            } catch {
              reject(
                new UnavailableError(
                  `${who} answered ${res.statusCode} with a non-JSON body: ${data.slice(0, 200)}`,
                ),
              );
              return;
            }
            if ((res.statusCode ?? 500) >= 400) {
              const b = parsed as Partial<ErrorBody> | undefined;
              reject(
                b?.error
                  ? fromErrorBody(b as ErrorBody)
                  : new UnavailableError(`${who} answered ${res.statusCode}`),
              );
            } else {
              const p = this.opts.protocol;
              const mismatch = p && checkServerVersion(p, res.headers[VERSION_HEADER[p]], who);
              if (mismatch) reject(mismatch);
              else resolve(parsed as T);
            }
          });
        },
      );
      req.setTimeout(timeoutMs, () => {
        req.destroy(
          new TimeoutError(
            `${who} did not answer ${method} ${path} within ${Math.round(timeoutMs / 1000)} s`,
          ),
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
