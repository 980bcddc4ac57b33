// The web console's entry: reads the session (who, which role), starts the event feed, and shows one view at a
// time by the URL's hash (#/topology, #/matrix, #/vms, #/console/NAME, #/plan, #/metrics, #/alerts, #/events).
import '@xterm/xterm/css/xterm.css';
import './app.css';
import { api } from './api.js';
import { h, replace } from './dom.js';
import { ApiError } from './lib/errors.js';
import { EventFeed } from './live.js';
import { alertsView } from './views/alerts.js';
import { consoleView } from './views/console.js';
import { eventsView } from './views/events.js';
import { matrixView } from './views/matrix.js';
import { metricsView } from './views/metrics.js';
import { planView } from './views/plan.js';
import { topologyView } from './views/topology.js';
import { messageOf, type View, type ViewContext } from './views/view.js';
import { vmsView } from './views/vms.js';

const NAV: View[] = [topologyView, matrixView, vmsView, planView, metricsView, alertsView, eventsView];
const ROUTES = new Map<string, View>([...NAV, consoleView].map((v) => [v.id, v]));

async function boot(): Promise<void> {
  const app = document.getElementById('app')!;
  let session: Awaited<ReturnType<typeof api.session>>;
  try {
    session = await api.session();
  } catch (e) {
    const expired = e instanceof ApiError && e.status === 401;
    replace(
      app,
      h(
        'main',
        { class: 'login' },
        h('h1', {}, 'vmlink'),
        h(
          'p',
          { class: 'error', role: 'alert' },
          expired
            ? 'You are not logged in, or your session has expired. Run `vmlink ui` and open the login link it prints.'
            : messageOf(e),
        ),
      ),
    );
    return;
  }
  const feed = new EventFeed();
  const ctx: ViewContext = { session, canOperate: session.role !== 'read-only', feed };
  const liveDot = h('span', { class: 'live', role: 'status', title: 'event stream' }, 'connecting');
  feed.onState((up) => {
    replace(liveDot, up ? 'live' : 'polling');
    liveDot.dataset.up = String(up);
  });
  const links = NAV.map((v) => h('a', { href: `#/${v.id}`, 'data-view': v.id }, v.title));
  const logout = h('button', { type: 'button', class: 'btn link' }, 'Log out');
  logout.addEventListener('click', async () => {
    await api.logout().catch(() => {});
    location.reload();
  });
  const main = h('main', { id: 'main', tabindex: '-1' });
  replace(
    app,
    h('a', { class: 'skip', href: '#main' }, 'Skip to content'),
    h(
      'header',
      { class: 'top' },
      h('strong', { class: 'brand' }, 'vmlink'),
      h('nav', { 'aria-label': 'Views' }, ...links),
      h(
        'div',
        { class: 'who' },
        liveDot,
        h('span', { 'data-testid': 'role' }, `${session.who} (${session.role})`),
        logout,
      ),
    ),
    main,
  );
  let unmount: () => void = () => {};
  const route = () => {
    const [id = 'topology', ...rest] = location.hash.replace(/^#\/?/, '').split('/');
    const view = ROUTES.get(id) ?? topologyView;
    unmount();
    for (const a of links) {
      if (a.dataset.view === view.id) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    document.title = `${view.title} — vmlink`;
    main.replaceChildren();
    unmount = view.mount(main, ctx, rest.join('/') || undefined);
  };
  window.addEventListener('hashchange', route);
  feed.start();
  route();
}

void boot();
