// Keeping the views live: the controller's event stream (a websocket; reconnected with backoff) tells the views
// something changed, and each open view also polls with backoff, so a view stays right when the stream is down.
import { EVENTS_STREAM_PATH, wsUrl } from './api.js';
import { Backoff } from './lib/backoff.js';
import type { EventItem } from './lib/types.js';

/** Largest event frame read (an event is a kind and a one-line message). */
const FRAME_MAX = 64 * 1024;

type Listener = (e: EventItem) => void;

/** The controller's live events, to every subscriber; `state` says whether the stream is up. */
export class EventFeed {
  private readonly listeners = new Set<Listener>();
  private readonly stateListeners = new Set<(up: boolean) => void>();
  private readonly backoff = new Backoff(1000, 30_000);
  private timer: ReturnType<typeof setTimeout> | undefined;
  up = false;

  start(): void {
    this.connect();
  }

  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  onState(l: (up: boolean) => void): void {
    this.stateListeners.add(l);
  }

  private setUp(up: boolean): void {
    this.up = up;
    for (const l of this.stateListeners) l(up);
  }

  private connect(): void {
    let ws: WebSocket;
    try {
      ws = new WebSocket(wsUrl(EVENTS_STREAM_PATH));
    } catch {
      this.retry();
      return;
    }
    ws.onopen = () => {
      this.backoff.succeeded();
      this.setUp(true);
    };
    ws.onmessage = (m) => {
      if (typeof m.data !== 'string' || m.data.length > FRAME_MAX) return;
      let e: unknown;
      try {
        e = JSON.parse(m.data);
      } catch {
        return;
      }
      const ev = e as Partial<EventItem>;
      if (typeof ev.kind !== 'string' || typeof ev.message !== 'string') return;
      const item: EventItem = {
        id: typeof ev.id === 'number' ? ev.id : 0,
        time: typeof ev.time === 'string' ? ev.time : new Date().toISOString(),
        kind: ev.kind,
        message: ev.message,
      };
      for (const l of this.listeners) l(item);
    };
    ws.onclose = () => {
      this.setUp(false);
      this.backoff.failed();
      this.retry();
    };
  }

  private retry(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.backoff.next());
  }
}

/**
 * Runs `load` now, then every `everyMs` while the view is open; after a failure waits longer (doubling to a
 * minute) and calls `onError`; `poke()` loads at once (an event said something changed), coalescing bursts.
 */
export class Poller {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private running = false;
  private again = false;
  private readonly backoff: Backoff;

  constructor(
    private readonly load: () => Promise<void>,
    everyMs: number,
    private readonly onError: (e: unknown) => void,
    private readonly onOk: () => void = () => {},
  ) {
    this.backoff = new Backoff(everyMs, 60_000);
  }

  start(): this {
    void this.tick();
    return this;
  }

  poke(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    void this.tick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.running = true;
    try {
      await this.load();
      this.backoff.succeeded();
      this.onOk();
    } catch (e) {
      this.backoff.failed();
      if (!this.stopped) this.onError(e);
    } finally {
      this.running = false;
    }
    if (this.stopped) return;
    clearTimeout(this.timer);
    if (this.again) {
      this.again = false;
      this.timer = setTimeout(() => void this.tick(), 50);
    } else this.timer = setTimeout(() => void this.tick(), this.backoff.next());
  }
}
