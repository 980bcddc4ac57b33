// `GET /v1/vms/:name/console/stream`: a VM's serial console as a websocket, relayed to the agent of its host (mutual
// TLS). The caller is authenticated by access control like any route (bearer token, the root socket, or a browser
// session); an operator (or more) attaches as the writer, anyone else as a reader whose keys never leave this
// process. Every attach is audited. Frames are bounded both ways, and a slow client loses output, with a notice.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import {
  CONSOLE_CONNECT_TIMEOUT_MS,
  CONSOLE_KEYS_FRAME_MAX_BYTES,
  CONSOLE_PENDING_KEYS_MAX_BYTES,
  type ConsoleMode,
  type ConsoleServerMessage,
  ConsoleStreamQuerySchema,
  closeFor,
  cutReason,
  DropGate,
  parseClientControl,
  parseServerControl,
} from '../../shared/console-wire.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { asBuffer, opened, openWebSocket, sendableClose } from '../../shared/http/ws-client.js';
import { log } from '../../shared/log.js';
import { NAME_PATTERN, type Spec } from '../../spec/schema.js';
import { agentAddress, agentTls } from '../agents.js';
import { principalOf } from '../auth/access.js';
import type { AuditLog } from '../auth/audit.js';
import { roleAllows } from '../auth/roles.js';

/** The route's pattern (roles.ts has its rule). */
export const CONSOLE_STREAM_ROUTE = '/v1/vms/:name/console/stream';
/** Largest message taken from an agent (output chunks, the log's tail as UTF-8). */
const AGENT_MESSAGE_MAX_BYTES = 1024 * 1024;

const ParamsSchema = z.object({ name: z.string().regex(NAME_PATTERN) }).strict();

/** What the route needs. */
export interface ConsoleProxyDeps {
  placement(vm: string): Promise<{ spec: Spec; host: string }>;
  audit: AuditLog;
  /** How this listener's callers are named in the audit trail. */
  listener: 'unix-socket' | 'tcp';
}

interface Attach {
  vm: string;
  host: string;
  spec: Spec;
  mode: ConsoleMode;
  tail: number;
}
const attaches = new WeakMap<FastifyRequest, Attach>();

/** Adds the console stream route to `app` (which has the websocket plugin). */
export function addConsoleStreamRoute(app: FastifyInstance, deps: ConsoleProxyDeps): void {
  app.get(
    CONSOLE_STREAM_ROUTE,
    {
      websocket: true,
      schema: { hide: true },
      // Before the upgrade: a bad request or an unknown VM is an HTTP answer, and the attach is audited.
      preHandler: async (req) => {
        const params = ParamsSchema.safeParse(req.params);
        const query = ConsoleStreamQuerySchema.safeParse(req.query);
        if (!params.success || !query.success)
          throw new InvalidRequestError(
            'console stream: expected /v1/vms/NAME/console/stream?tail=0..65536[&mode=read]',
          );
        const vm = params.data.name;
        const { spec, host } = await deps.placement(vm);
        const who = principalOf(req);
        const mayWrite = !!who && roleAllows(who.role, 'operator');
        const mode: ConsoleMode = mayWrite && query.data.mode !== 'read' ? 'write' : 'read';
        attaches.set(req, { vm, host, spec, mode, tail: query.data.tail });
        await deps.audit
          .record({
            who: who?.who ?? 'anonymous',
            ...(who ? { role: who.role } : {}),
            remote: deps.listener === 'unix-socket' ? 'unix-socket' : (req.ip ?? 'unknown'),
            method: 'GET',
            route: CONSOLE_STREAM_ROUTE,
            object: `${vm} (${mode})`,
            status: 101,
            durationMs: 0,
          })
          .catch((err: unknown) =>
            log.error({ err, vm }, 'cannot write the audit entry of a console attach'),
          );
      },
    },
    (client, req) => relay(client, attaches.get(req)!),
  );
}

/** Relays `client` to the agent's console stream of `a.vm` until either side closes. */
function relay(client: WebSocket, a: Attach): void {
  const send = (m: ConsoleServerMessage) => client.send(JSON.stringify(m), { binary: false });
  let upstream: WebSocket;
  try {
    const address = agentAddress(a.spec, a.host);
    upstream = openWebSocket({
      address,
      path: `/v1/vms/${a.vm}/console/stream?mode=${a.mode}&tail=${a.tail}`,
      name: `agent of ${a.host}`,
      tls: agentTls(a.host, address),
      protocol: 'wire',
      maxPayload: AGENT_MESSAGE_MAX_BYTES,
      handshakeTimeoutMs: CONSOLE_CONNECT_TIMEOUT_MS,
    });
  } catch (e) {
    const c = closeFor(e);
    client.close(c.code, c.reason);
    return;
  }
  const gate = new DropGate();
  let toldReadOnly = false;
  const readOnly = () => {
    if (toldReadOnly) return;
    toldReadOnly = true;
    send({
      type: 'notice',
      message: 'keys refused: your role may only watch this console (operator may type)',
    });
  };
  opened(upstream, `agent of ${a.host}`).catch((e: unknown) => {
    const c = closeFor(e);
    if (client.readyState === client.OPEN) client.close(c.code, c.reason);
  });
  upstream.on('error', () => {}); // `opened` reports the handshake's failure; a later one ends in `close`.

  // Keys: only a writer's, bounded, and only once the agent is connected (before its hello there is no keyboard).
  client.on('message', (data, isBinary) => {
    const buf = asBuffer(data);
    if (isBinary) {
      if (a.mode === 'read') return readOnly();
      if (buf.length > CONSOLE_KEYS_FRAME_MAX_BYTES)
        return send({
          type: 'notice',
          message: `a keys frame of ${buf.length} bytes was refused (at most ${CONSOLE_KEYS_FRAME_MAX_BYTES})`,
        });
      if (upstream.readyState !== upstream.OPEN) return;
      if (upstream.bufferedAmount + buf.length > CONSOLE_PENDING_KEYS_MAX_BYTES)
        return send({ type: 'notice', message: 'keys dropped: the agent is not taking them fast enough' });
      upstream.send(buf, { binary: true });
      return;
    }
    const msg = parseClientControl(buf.toString('utf8'));
    if (!msg) return send({ type: 'notice', message: 'unknown control message ignored' });
    if (a.mode === 'read') return readOnly();
    if (upstream.readyState === upstream.OPEN) upstream.send(JSON.stringify(msg), { binary: false });
  });
  // Output: every byte the agent sends, unless this client's queue is full; control frames checked, then passed.
  upstream.on('message', (data, isBinary) => {
    const buf = asBuffer(data);
    if (!isBinary) {
      const msg = parseServerControl(buf.toString('utf8'));
      if (msg) send(msg);
      return;
    }
    const r = gate.admit(client.bufferedAmount, buf.length);
    if (!r.send) return;
    if (r.dropped)
      send({
        type: 'notice',
        message: `${r.dropped} bytes of console output were dropped: this client reads too slowly`,
      });
    client.send(buf, { binary: true });
  });
  upstream.on('close', (code, reason) => {
    if (client.readyState === client.OPEN || client.readyState === client.CONNECTING)
      client.close(
        sendableClose(code),
        cutReason(reason.toString('utf8') || `the console of ${a.vm} on ${a.host} closed`),
      );
  });
  client.on('close', () => {
    if (upstream.readyState === upstream.OPEN) upstream.close(1000, 'detached');
    else upstream.terminate();
  });
}
