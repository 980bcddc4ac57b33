// A websocket client over the same addresses and TLS checks as HttpClient (`unix:///p`, `https+unix:///p` — TLS over
// a lab relay's socket —, `https://h:p`): the controller reaches an agent's console stream with it, the CLI the
// controller's. A refusal before the upgrade (the server's JSON error body) becomes the typed error it names.
import { connect as tlsConnect } from 'node:tls';
import WebSocket from 'ws';
import { BadResponseError, ErrorBodySchema, fromErrorBody, UnavailableError } from '../errors.js';
import { formatVersionHeader, localVersion, type Protocol, VERSION_HEADER } from '../version.js';
import { type ClientTls, parseAddress } from './client.js';

/** Largest refusal body read before the upgrade. */
const REFUSAL_MAX_BYTES = 64 * 1024;

/** What to open. */
export interface WsClientOptions {
  /** The server's address, as HttpClient takes it. */
  address: string;
  /** Path and query of the route. */
  path: string;
  /** Who the server is, in messages (`the controller`, `agent of host1`). */
  name: string;
  tls?: ClientTls | undefined;
  token?: string | undefined;
  protocol?: Protocol;
  /** Largest message accepted from the server. */
  maxPayload: number;
  handshakeTimeoutMs: number;
}

/** Opens a websocket; use `opened` to wait for it. */
export function openWebSocket(o: WsClientOptions): WebSocket {
  const target = parseAddress(o.address);
  const headers: Record<string, string> = {
    ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
    ...(o.protocol ? { [VERSION_HEADER[o.protocol]]: formatVersionHeader(localVersion(o.protocol)) } : {}),
  };
  const common = {
    headers,
    maxPayload: o.maxPayload,
    handshakeTimeout: o.handshakeTimeoutMs,
    perMessageDeflate: false,
  };
  if (!target.tls) {
    if (!target.socketPath) throw new UnavailableError(`${o.name} at ${o.address} is reached only over TLS`);
    return new WebSocket(`ws+unix://${target.socketPath}:${o.path}`, common);
  }
  const tls = o.tls;
  if (!tls)
    throw new UnavailableError(`no CA to check ${o.name} at ${o.address} against; TLS needs one`, o.name);
  const host = target.host ?? 'vmlink';
  const url = target.socketPath ? `wss://vmlink${o.path}` : `wss://${hostPort(host, target.port!)}${o.path}`;
  return new WebSocket(url, {
    ...common,
    // Our own connection: to the relay's socket or the host, the chain checked against the CA, and who the peer is
    // judged from its certificate (a lab host is reached through a relay socket, so never from the address).
    createConnection: () =>
      tlsConnect({
        ...(target.socketPath ? { path: target.socketPath } : { host, port: target.port! }),
        ca: tls.ca,
        ...(tls.key && tls.cert ? { key: tls.key, cert: tls.cert } : {}),
        servername: target.host && !/^[\d.:]+$/.test(target.host) ? target.host : 'vmlink',
        minVersion: 'TLSv1.3',
        checkServerIdentity: (_h, cert) => {
          const why = tls.checkPeer?.(cert);
          return why ? new Error(`${o.name} presented a certificate that is refused: ${why}`) : undefined;
        },
      }),
  });
}

const hostPort = (host: string, port: number) =>
  host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;

/** Resolves once `ws` is open; rejects with the server's typed refusal, or an `UnavailableError`. */
export function opened(ws: WebSocket, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', (e) =>
      reject(
        e instanceof Error && 'kind' in e
          ? e
          : new UnavailableError(`cannot reach ${name}: ${e.message}`, name, e),
      ),
    );
    ws.once('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size <= REFUSAL_MAX_BYTES) chunks.push(d);
        else res.destroy();
      });
      const done = () => {
        req.destroy();
        let err: Error = new BadResponseError(`${name} refused the websocket with HTTP ${res.statusCode}`);
        try {
          const body = ErrorBodySchema.safeParse(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          if (body.success) err = fromErrorBody(body.data);
        } catch {
          // Not vmlink's error body: the status says enough.
        }
        reject(err);
      };
      res.once('end', done);
      res.once('close', done);
    });
  });
}

/** A received message as a Buffer. */
export function asBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

/** A close code that may be sent on (1005 and 1006 only describe what was received). */
export const sendableClose = (code: number) =>
  code === 1000 ||
  code === 1001 ||
  (code >= 1007 && code <= 1014 && code !== 1010) ||
  (code >= 3000 && code <= 4999)
    ? code
    : 1011;
