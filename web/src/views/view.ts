// What every view gets (the session, the event feed) and the shared plumbing of a live view: poll with backoff,
// reload at once on a relevant event, show a failure in plain words in the view's own alert line.
import { h, replace } from '../dom.js';
import type { EventItem, SessionInfo } from '../lib/types.js';
import type { EventFeed } from '../live.js';
import { Poller } from '../live.js';

export interface ViewContext {
  session: SessionInfo;
  /** Whether the session may change things (operator or admin); the API refuses a read-only one anyway. */
  canOperate: boolean;
  feed: EventFeed;
}

export interface View {
  id: string;
  title: string;
  /** Renders into `root`; returns what stops it (timers, sockets). `arg`: the rest of the route (a VM's name). */
  mount(root: HTMLElement, ctx: ViewContext, arg?: string): () => void;
}

/** A message for anything thrown. */
export const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** The alert line of a view: shows the latest failure, cleared by the next success. */
export function errorLine(): { el: HTMLElement; show(e: unknown): void; clear(): void } {
  const el = h('p', { class: 'error', role: 'alert', hidden: true });
  return {
    el,
    show(e) {
      replace(el, messageOf(e));
      el.hidden = false;
    },
    clear() {
      el.hidden = true;
      replace(el);
    },
  };
}

/**
 * Runs `load` every `everyMs` (with backoff on failure) and at once when an event whose kind passes `relevant`
 * arrives; failures go to `err`. Returns the stop function.
 */
export function live(
  ctx: ViewContext,
  load: () => Promise<void>,
  everyMs: number,
  err: ReturnType<typeof errorLine>,
  relevant: (e: EventItem) => boolean = () => true,
): () => void {
  const p = new Poller(load, everyMs, err.show, err.clear).start();
  const off = ctx.feed.subscribe((e) => {
    if (relevant(e)) p.poke();
  });
  return () => {
    p.stop();
    off();
  };
}

/** A section heading with an optional line of actions. */
export function header(title: string, ...actions: Array<Node | false | undefined>): HTMLElement {
  return h('div', { class: 'view-head' }, h('h1', {}, title), h('div', { class: 'actions' }, ...actions));
}
