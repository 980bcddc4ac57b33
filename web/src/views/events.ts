// Events: the newest first, the recent ones read once, then new ones as the event stream (or a poll) brings them;
// at most EVENTS_MAX kept on the page.
import { api } from '../api.js';
import { h, replace } from '../dom.js';
import type { EventItem } from '../lib/types.js';
import { errorLine, header, live, type View } from './view.js';

const EVENTS_MAX = 500;

export const eventsView: View = {
  id: 'events',
  title: 'Events',
  mount(root, ctx) {
    const err = errorLine();
    const list = h('ol', { class: 'events', 'data-testid': 'events', reversed: true });
    const seen = new Map<number, EventItem>();
    const render = () => {
      const items = [...seen.values()].sort((a, b) => b.id - a.id || b.time.localeCompare(a.time));
      replace(
        list,
        ...items.map((e) =>
          h(
            'li',
            { 'data-kind': e.kind },
            h('time', { datetime: e.time }, new Date(e.time).toLocaleTimeString()),
            ' ',
            h('span', { class: 'kind' }, e.kind),
            ' ',
            e.message,
          ),
        ),
      );
    };
    const add = (items: EventItem[]) => {
      for (const e of items) seen.set(e.id, e);
      if (seen.size > EVENTS_MAX) {
        const drop = [...seen.keys()].sort((a, b) => a - b).slice(0, seen.size - EVENTS_MAX);
        for (const k of drop) seen.delete(k);
      }
      render();
    };
    replace(root, header('Events'), err.el, list);
    const off = ctx.feed.subscribe((e) => add([e]));
    // The stream brings new events; a slow poll fills any gap left while it was down.
    const stop = live(
      ctx,
      async () => add(await api.events(200)),
      15_000,
      err,
      () => false,
    );
    return () => {
      off();
      stop();
    };
  },
};
