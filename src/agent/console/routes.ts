// The agent's console stream route: `GET /v1/vms/:name/console/stream` (websocket, mutual TLS as every agent route;
// only the controller calls it, having decided the caller's mode), relaying a VM's serial console through the hub.
import websocket from '@fastify/websocket';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RawData, WebSocket } from 'ws';
import { z } from 'zod';
import {
  AgentConsoleQuerySchema,
  CONSOLE_KEYS_FRAME_MAX_BYTES,
  closeFor,
  cutReason,
  parseClientControl,
  STREAM_MAX_PAYLOAD_BYTES,
} from '../../shared/console-wire.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { NAME_PATTERN } from '../../spec/schema.js';
import type { Agent } from '../agent.js';
import { type ConsoleAttachment, ConsoleHub, type ConsolePeer } from './hub.js';

const ParamsSchema = z.object({ name: z.string().regex(NAME_PATTERN) }).strict();

/** The route's parsed request, kept from the checks before the upgrade for the handler after it. */
const parsed = new WeakMap<FastifyRequest, { vm: string; query: z.output<typeof AgentConsoleQuerySchema> }>();

/** Registers the websocket plugin (when the app has none yet) and the console stream route. */
export async function registerConsoleStreamRoute(app: FastifyInstance, agent: Agent): Promise<void> {
  if (!app.hasDecorator('websocketServer'))
    await app.register(websocket, { options: { maxPayload: STREAM_MAX_PAYLOAD_BYTES } });
  const hub = new ConsoleHub({ host: agent.host, socketPath: (vm) => agent.hypervisor.consolePath(vm) });
  app.addHook('onClose', async () => hub.close());
  app.get(
    '/v1/vms/:name/console/stream',
    {
      websocket: true,
      schema: { hide: true },
      // Checked before the upgrade, so a bad request or a missing VM is an HTTP answer the controller can relay.
      preHandler: async (req) => {
        const params = ParamsSchema.safeParse(req.params);
        const query = AgentConsoleQuerySchema.safeParse(req.query);
        if (!params.success || !query.success)
          throw new InvalidRequestError(
            'console stream: expected /v1/vms/NAME/console/stream?mode=read|write',
          );
        await agent.vm(params.data.name);
        parsed.set(req, { vm: params.data.name, query: query.data });
      },
    },
    async (socket, req) => {
      const { vm, query } = parsed.get(req)!;
      await relay(socket, hub, agent, vm, query);
    },
  );
}

/** Attaches `socket` to `vm`'s console: the log's tail first (if asked), then live output; its keys to the hub. */
async function relay(
  socket: WebSocket,
  hub: ConsoleHub,
  agent: Agent,
  vm: string,
  query: z.output<typeof AgentConsoleQuerySchema>,
): Promise<void> {
  // Live output waits until the log's tail is sent, so the client sees hello, the tail, then what followed.
  let held: Buffer[] | undefined = [];
  const peer: ConsolePeer = {
    output: (d) => (held ? held.push(d) : socket.send(d, { binary: true })),
    control: (m) => socket.send(JSON.stringify(m), { binary: false }),
    queued: () => socket.bufferedAmount + (held?.reduce((n, b) => n + b.length, 0) ?? 0),
    close: (code, reason) => socket.close(code, cutReason(reason)),
  };
  let attachment: ConsoleAttachment | undefined;
  let gone = false;
  // Frames that arrive while attaching are dropped: no keys before the hello says who holds the keyboard.
  socket.on('message', (data: RawData, isBinary: boolean) => {
    if (!attachment) return;
    const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    if (isBinary) {
      if (buf.length > CONSOLE_KEYS_FRAME_MAX_BYTES)
        return peer.control({
          type: 'notice',
          message: `a keys frame of ${buf.length} bytes was refused (at most ${CONSOLE_KEYS_FRAME_MAX_BYTES})`,
        });
      return attachment.keys(buf);
    }
    const msg = parseClientControl(buf.toString('utf8'));
    if (msg?.type === 'takeover') attachment.takeover();
    else peer.control({ type: 'notice', message: 'unknown control message ignored' });
  });
  socket.on('close', () => {
    gone = true;
    attachment?.detach();
  });
  try {
    const a = await hub.attach(vm, peer, query.mode);
    if (gone) return a.detach();
    attachment = a;
    // The driver reads its log without following links; the tail is text (the log's bytes as UTF-8).
    const tail = query.tail > 0 ? await agent.hypervisor.consoleTail(vm, query.tail) : '';
    if (tail) socket.send(Buffer.from(tail.slice(-query.tail)), { binary: true });
    const live = held;
    held = undefined;
    for (const d of live) socket.send(d, { binary: true });
  } catch (e) {
    const c = closeFor(e);
    socket.close(c.code, c.reason);
  }
}
