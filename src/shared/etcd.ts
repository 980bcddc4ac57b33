// One way to reach etcd, for controllers (store, coordination) and agents (lease, owner checks): where it is
// (`etcd://a:2379,b:2379`), mutual TLS with a vmlink certificate (its CN is the etcd user), bounded request times,
// and failures as vmlink errors.

import {
  ConsecutiveBreaker,
  circuitBreaker,
  ExponentialBackoff,
  handleWhen,
  type IBackoff,
  noop,
  retry,
} from 'cockatiel';
import { Etcd3, type IOptions, isRecoverableError } from 'etcd3';
import { InvalidRequestError, UnavailableError, VmlinkError } from './errors.js';
import { ETCD_REQUEST_TIMEOUT_MS, ETCD_RESPONSE_MAX_BYTES } from './limits.js';

/** Where etcd is and how to prove who we are. */
export interface EtcdConnection {
  /** Client URLs: `https://addr:port` (or `http://` for tests without TLS). */
  endpoints: string[];
  /** PEM texts: the CA that signed the members' certificates, and our certificate and key (CN = etcd user). */
  tls?: { ca: string; cert: string; key: string };
}

/**
 * Parses a store location: `etcd://a:2379,b:2379` (TLS) or `etcd+http://127.0.0.1:2379` (plain, tests only).
 * Throws `InvalidRequestError` naming the bad part.
 */
export function parseEtcdLocation(location: string): { endpoints: string[]; tls: boolean } {
  const m = /^etcd(\+http)?:\/\/(.+)$/.exec(location);
  if (!m)
    throw new InvalidRequestError(`an etcd location is etcd://ADDR:PORT[,ADDR:PORT...], got ${location}`);
  const tls = !m[1];
  const endpoints = m[2]!.split(',').map((hp) => {
    if (!/^[\w.-]+:\d{1,5}$/.test(hp))
      throw new InvalidRequestError(`etcd endpoint must be ADDR:PORT, got "${hp}" in ${location}`);
    return `${tls ? 'https' : 'http'}://${hp}`;
  });
  return { endpoints, tls };
}

/** Options of `etcdClient`. */
export interface EtcdClientOptions {
  /** Deadline of each unary request (default ETCD_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
  /**
   * Retry a failed request on another member (default true). A lease keeper passes false: it times its own retries
   * and must see a failure at once, not after the client's backoff.
   */
  retry?: boolean;
  /**
   * The name the members' certificates must carry instead of the dialled address (one for every endpoint): for an
   * endpoint that is a relay's socket (`unix:///path`), as the lab's controller reaches its etcd.
   */
  serverName?: string;
  /**
   * Skip a member for 1 s after 3 failures in a row (default true). False for a client many independent lease keepers
   * share (the simulated fleet): one slow answer to one of them must not fail every other's renewal for a second.
   */
  breaker?: boolean;
}

/** An etcd3 client for `c`: bounded requests, no long circuit-breaker pauses (a failure is seen at once). */
export function etcdClient(c: EtcdConnection, opts: EtcdClientOptions = {}): Etcd3 {
  const timeout = opts.requestTimeoutMs ?? ETCD_REQUEST_TIMEOUT_MS;
  const options: IOptions = {
    hosts: c.endpoints,
    dialTimeout: timeout,
    // Store ranges are paged to fit this (store/etcd.ts RANGE_PAGE_KEYS); the default 4 MiB holds 3 large values.
    grpcOptions: { 'grpc.max_receive_message_length': ETCD_RESPONSE_MAX_BYTES },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    faultHandling: {
      // A member that fails three times in a row is skipped for 1 s (etcd3's default is 5 s: longer than a lease
      // keeper can wait).
      host: () =>
        opts.breaker === false
          ? noop
          : circuitBreaker(handleWhen(isRecoverableError), {
              halfOpenAfter: 1_000,
              breaker: new ConsecutiveBreaker(3),
            }),
      global:
        opts.retry === false
          ? noop
          : retry(handleWhen(isRecoverableError), { maxAttempts: Math.max(1, c.endpoints.length - 1) }),
      // A lost watch comes back within 2 s (the default waits up to 30 s). etcd3 itself passes this very factory as
      // its default; only its declared type is older.
      watchBackoff: new ExponentialBackoff({
        initialDelay: 100,
        maxDelay: 2_000,
      }) as unknown as IBackoff<unknown>,
    },
  };
  if (opts.serverName)
    options.grpcOptions = {
      ...options.grpcOptions,
      'grpc.ssl_target_name_override': opts.serverName,
      'grpc.default_authority': opts.serverName,
    };
  if (c.tls)
    options.credentials = {
      rootCertificate: Buffer.from(c.tls.ca),
      certChain: Buffer.from(c.tls.cert),
      privateKey: Buffer.from(c.tls.key),
    };
  return new Etcd3(options);
}

/** An etcd failure as a vmlink error: unavailable (no member, no quorum), else passed through. */
export function etcdFailure(e: unknown, what: string): VmlinkError {
  if (e instanceof VmlinkError) return e;
  const msg = (e as Error)?.message ?? String(e);
  return new UnavailableError(`etcd: ${what}: ${msg}`, 'etcd', e);
}
