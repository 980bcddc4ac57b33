// The NBD tunnel of a block migration (docs/mobility.md). NBD needs both directions, so each NBD connection the source
// QEMU opens (on a unix socket in its run directory: QEMU is jailed in an empty network namespace) is carried as one
// websocket (an HTTP/1.1 Upgrade on the target agent's HTTPS server) to the target agent, which connects it to its
// QEMU's NBD export. Both ends are the agents' mutual TLS with host certificates from the cluster CA: the source checks
// that the target's certificate is the target host's, the target opens a tunnel only for the migration's source host
// (service.ts). Bounded: bytes per migration, messages in size, connections per disk, and closed with the migration.
import type { Socket } from 'node:net';
import { type Duplex, finished } from 'node:stream';
import { createWebSocketStream, type WebSocket } from 'ws';
import { InvalidRequestError } from '../../shared/errors.js';
import { opened, openWebSocket } from '../../shared/http/ws-client.js';
import { peerMismatch, type TlsCredentials } from '../../shared/tls.js';

/** The tunnel's route on the target agent (a websocket). */
export const nbdTunnelPath = (id: string) => `/v1/migrations/${id}/nbd`;
/** Largest websocket message either end accepts (a unix socket read is at most 64 KiB). */
export const TUNNEL_MAX_PAYLOAD_BYTES = 1024 * 1024;
/** How long the source waits for the target to take the tunnel (ms). */
const TUNNEL_HANDSHAKE_MS = 10_000;
/** How long the other side of a tunnel may still drain once one side ended (ms). */
const DRAIN_MS = 1_000;

/** Bytes the tunnels of one migration may still carry. */
export class ByteBudget {
  private used = 0;
  constructor(
    readonly max: number,
    private readonly what: string,
  ) {}

  /** Counts `n` bytes; an error once the budget is spent. */
  take(n: number): Error | undefined {
    this.used += n;
    return this.used > this.max
      ? new InvalidRequestError(`${this.what} carried more than ${this.max} bytes; cut off`)
      : undefined;
  }
}

/**
 * Pipes `a` and `b` both ways, each byte counted against `budget` (when given); an end or error on either side
 * closes both. Resolves once both are closed.
 */
export function splice(a: Duplex, b: Duplex, budget?: ByteBudget): Promise<void> {
  const cut = (e?: Error) => {
    a.destroy(e);
    b.destroy(e);
  };
  if (budget)
    for (const s of [a, b])
      s.on('data', (chunk: Buffer) => {
        const over = budget.take(chunk.length);
        if (over) cut(over);
      });
  a.on('error', () => cut());
  b.on('error', () => cut());
  a.pipe(b);
  b.pipe(a);
  // A half-closed NBD connection is useless: once one side is done, the other gets a moment to drain, then both go.
  // (A websocket stream emits 'close' only when destroyed, so the end is judged from `finished`, then destroyed.)
  const drain = () => setTimeout(() => cut(), DRAIN_MS).unref();
  a.once('end', drain);
  b.once('end', drain);
  const done = (s: Duplex) => new Promise<void>((resolve) => finished(s, () => resolve()));
  return Promise.all([done(a), done(b)]).then(() => cut());
}

/** Source: carries QEMU's NBD connection `conn` to the target agent's export of migration `id`. */
export async function tunnelTo(
  conn: Socket,
  o: { id: string; to: { host: string; agent: string }; tls: TlsCredentials },
): Promise<void> {
  conn.pause();
  const name = `the agent of ${o.to.host}`;
  const ws = openWebSocket({
    address: o.to.agent,
    path: nbdTunnelPath(o.id),
    name,
    tls: {
      ca: o.tls.ca,
      key: o.tls.key,
      cert: o.tls.cert,
      checkPeer: (cert) => peerMismatch(cert, { role: 'host', name: o.to.host }),
    },
    protocol: 'wire',
    maxPayload: TUNNEL_MAX_PAYLOAD_BYTES,
    handshakeTimeoutMs: TUNNEL_HANDSHAKE_MS,
  });
  const gone = () => ws.terminate();
  conn.once('close', gone);
  try {
    await opened(ws, name);
  } catch (e) {
    conn.destroy();
    throw e;
  }
  conn.off('close', gone);
  await splice(conn, createWebSocketStream(ws));
}

/** Target: carries websocket `ws` to `qemu` (a connection to its NBD export), within `budget`. */
export function tunnelFrom(ws: WebSocket, qemu: Socket, budget: ByteBudget): Promise<void> {
  return splice(createWebSocketStream(ws), qemu, budget);
}
