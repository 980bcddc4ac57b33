// Metrics: small SVG line charts of the controller's gauges (GET /v1/metrics, Prometheus text), polled every 5 s
// into a bounded history (lib/prom.ts) kept while the app is open, so the charts grow as you watch.
import { api } from '../api.js';
import { h, replace, s } from '../dom.js';
import { CHARTS, type ChartDef, formatValue, linePath, MetricHistory, parseExposition } from '../lib/prom.js';
import { errorLine, header, live, type View } from './view.js';

const history = new MetricHistory();
const W = 380;
const H = 120;
const COLOURS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

function chart(def: ChartDef, now: number): HTMLElement {
  const lines = history.lines(def.metric);
  // From the first sample (at most 10 minutes back), at least a minute wide: a fresh page's few points fill it.
  const first = Math.min(now, ...lines.map((l) => l.points[0]?.[0] ?? now));
  const t0 = Math.min(now - 60_000, Math.max(now - 10 * 60_000, first));
  const top = Math.max(def.unit === 'ratio' ? 1 : 0, ...lines.flatMap((l) => l.points.map(([, v]) => v)));
  const max = top > 0 ? top * (def.unit === 'ratio' ? 1 : 1.1) : 1;
  return h(
    'figure',
    { class: 'chart', 'data-metric': def.metric },
    h('figcaption', {}, def.title, h('span', { class: 'meta' }, ` (max ${formatValue(max, def.unit)})`)),
    lines.length === 0
      ? h('p', { class: 'meta' }, 'no samples yet')
      : s(
          'svg',
          { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': def.title },
          s('rect', { x: 0, y: 0, width: W, height: H, class: 'frame' }),
          ...lines.flatMap((l, i) => {
            const box = { width: W, height: H, t0, t1: now, max };
            const last = l.points[l.points.length - 1]!;
            // The newest point as a dot: visible even before the line has two points.
            const [x, y] = linePath([last], box).slice(2).split(' ');
            return [
              s('path', {
                d: linePath(l.points, box),
                stroke: COLOURS[i % COLOURS.length],
                fill: 'none',
                'stroke-width': 2,
              }),
              s('circle', { cx: x, cy: y, r: 3, fill: COLOURS[i % COLOURS.length] }),
            ];
          }),
        ),
    lines.length > 0 &&
      h(
        'ul',
        { class: 'chart-legend' },
        ...lines.map((l, i) => {
          const last = l.points[l.points.length - 1];
          return h(
            'li',
            {},
            h('span', { class: 'dot', 'data-colour': i % COLOURS.length }),
            `${l.name || '(all)'}: ${last ? formatValue(last[1], def.unit) : '—'}`,
          );
        }),
      ),
  );
}

export const metricsView: View = {
  id: 'metrics',
  title: 'Metrics',
  mount(root, ctx) {
    const err = errorLine();
    const grid = h('div', { class: 'charts', 'data-testid': 'charts' });
    replace(
      root,
      header('Metrics', h('span', { class: 'meta' }, 'last 10 minutes, every 5 s')),
      err.el,
      grid,
    );
    const load = async () => {
      const page = await api.metrics();
      const now = Date.now();
      history.add(now, parseExposition(page));
      replace(grid, ...CHARTS.map((d) => chart(d, now)));
    };
    return live(ctx, load, 5000, err, () => false);
  },
};
