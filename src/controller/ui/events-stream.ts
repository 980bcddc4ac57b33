// `GET /v1/events/stream`: the event log live, as a websocket of JSON text frames (one event each, as `GET /v1/events`
// lists them). One poller reads the store while any client listens (events are appended by every part of the
// controller, and by other controllers of a cluster, so the store is the one place they all meet); each client has a
// bounded queue: past it, events are dropped and the client is told how many.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { InvalidRequestError, UnavailableError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import type { StoreEvent } from '../store/types.js';

/** The route's pattern (roles.ts has its rule). */
export const EVENTS_STREAM_ROUTE = '/v1/events/stream';
/** How often the store is read while clients listen. */
export const EVENTS_POLL_MS = 1000;
/** Events read per poll (a burst beyond it is caught up on the next polls). */
const EVENTS_POLL_BATCH = 200;
/** Bytes queued to one client beyond which its events are dropped. */
export const EVENTS_CLIENT_BUFFER_MAX_BYTES = 1024 * 1024;
/** Clients listening at once (per controller). */
export const EVENTS_CLIENTS_MAX = 64;

const QuerySchema = z
  .object({ backlog: z.coerce.number().int().min(0).max(EVENTS_POLL_BATCH).default(20) })
  .strict();

type Listener = (events: StoreEvent[]) => void;

/** One poller of the store's events for every listening client. */
export class EventFeed {
  private readonly listeners = new Set<Listener>();
  private timer: NodeJS.Timeout | undefined;
  private lastId: number | undefined;
  private polling = false;

  constructor(
    private readonly events: (limit: number) => Promise<StoreEvent[]>,
    private readonly pollMs = EVENTS_POLL_MS,
  ) {}

  get size(): number {
    return this.listeners.size;
  }

  /** The newest `n` events, oldest first (a new client's backlog). */
  recent(n: number): Promise<StoreEvent[]> {
    return this.events(n);
  }

  /** Calls `listener` with each poll's new events until the returned function is called. */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    if (!this.timer) this.timer = setInterval(() => void this.poll(), this.pollMs);
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stop();
    };
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.lastId = undefined;
  }

  /** Reads the store once and hands the events newer than the last poll's to every listener. */
  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const batch = await this.events(EVENTS_POLL_BATCH);
      // The first poll hands over its whole batch: each client skips what its backlog read already covered.
      const last = this.lastId;
      const fresh = last === undefined ? batch : batch.filter((e) => e.id > last);
      const newest = batch.at(-1)?.id;
      if (newest !== undefined && (last === undefined || newest > last)) this.lastId = newest;
      if (fresh.length) for (const l of this.listeners) l(fresh);
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'cannot read the events for the live stream');
    } finally {
      this.polling = false;
    }
  }
}

const queries = new WeakMap<FastifyRequest, z.output<typeof QuerySchema>>();

/** Adds the events stream route to `app` (which has the websocket plugin). */
export function addEventsStreamRoute(app: FastifyInstance, feed: EventFeed): void {
  app.get(
    EVENTS_STREAM_ROUTE,
    {
      websocket: true,
      schema: { hide: true },
      preHandler: async (req) => {
        const q = QuerySchema.safeParse(req.query);
        if (!q.success)
          throw new InvalidRequestError('events stream: expected /v1/events/stream?backlog=0..200');
        if (feed.size >= EVENTS_CLIENTS_MAX)
          throw new UnavailableError(
            `the controller serves at most ${EVENTS_CLIENTS_MAX} live event streams; close one or poll GET /v1/events`,
          );
        queries.set(req, q.data);
      },
    },
    (client, req) => stream(client, feed, queries.get(req)!.backlog),
  );
}

/** Sends `client` its backlog, then every new event, dropping (and counting) while its queue is full. */
function stream(client: WebSocket, feed: EventFeed, backlog: number): void {
  let sentId = -1;
  let dropped = 0;
  const deliver = (events: StoreEvent[]) => {
    for (const e of events) {
      if (e.id <= sentId) continue;
      sentId = e.id;
      if (client.bufferedAmount > EVENTS_CLIENT_BUFFER_MAX_BYTES) {
        dropped++;
        continue;
      }
      if (dropped) {
        client.send(JSON.stringify({ type: 'dropped', count: dropped }));
        dropped = 0;
      }
      client.send(JSON.stringify({ id: e.id, time: e.time, kind: e.kind, message: e.message }));
    }
  };
  // Subscribed before the backlog is read, so nothing appended meanwhile is missed (ids dedupe the overlap).
  const held: StoreEvent[] = [];
  let ready = false;
  const unsubscribe = feed.subscribe((events) => (ready ? deliver(events) : held.push(...events)));
  client.on('close', unsubscribe);
  // Frames from the client mean nothing here; they are read (and dropped) so they never queue.
  client.on('message', () => {});
  // At least the newest event is read: it marks where live events begin for a client that wants no backlog.
  feed
    .recent(Math.max(backlog, 1))
    .then((events) => {
      deliver(backlog > 0 ? events.slice(-backlog) : []);
      sentId = Math.max(sentId, events.at(-1)?.id ?? -1);
      ready = true;
      deliver(held.sort((x, y) => x.id - y.id));
    })
    .catch((err: unknown) => {
      log.warn({ err: (err as Error).message }, 'cannot read the backlog of an events stream');
      client.close(1011, 'cannot read the event log');
    });
}
