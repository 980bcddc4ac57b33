// Topology: networks, hosts holding their VMs, and the links between them, each link coloured by the last verify
// matrix (lib/matrix.ts linkStatuses; the legend says what each colour means).
import { api } from '../api.js';
import { ago, h, replace, s } from '../dom.js';
import { layoutTopology } from '../lib/layout.js';
import { type CellStatus, linkStatuses, statusClass, statusText } from '../lib/matrix.js';
import { errorLine, header, live, type View } from './view.js';

const LEGEND: CellStatus[] = ['ok', 'mismatch', 'unmeasured', 'none'];

export const topologyView: View = {
  id: 'topology',
  title: 'Topology',
  mount(root, ctx) {
    const err = errorLine();
    const meta = h('p', { class: 'meta' });
    const drawing = h('div', { class: 'topology', 'data-testid': 'topology' });
    const legend = h(
      'ul',
      { class: 'legend' },
      ...LEGEND.map((st) =>
        h('li', {}, h('span', { class: `swatch ${statusClass(st)}` }), ` link: ${statusText[st]}`),
      ),
    );
    replace(root, header('Topology'), err.el, meta, drawing, legend);
    const load = async () => {
      const [status, networks, vms, verify] = await Promise.all([
        api.status(),
        api.networks(),
        api.vms(),
        api.lastVerify(),
      ]);
      const width = Math.max(600, Math.min(1300, drawing.clientWidth || 1200));
      const t = layoutTopology({ hosts: status.hosts, networks, vms, links: linkStatuses(verify) }, width);
      replace(
        meta,
        verify
          ? `Links coloured by the verify of ${ago(verify.measuredAt)}: ${verify.cells.length} cells, ${verify.mismatches} mismatch(es).`
          : 'No verify has run yet: links are not coloured (run one in the Matrix view or with `vmlink verify`).',
      );
      const svg = s(
        'svg',
        {
          viewBox: `0 0 ${t.width} ${t.height}`,
          width: t.width,
          height: t.height,
          role: 'img',
          'aria-label': `Topology: ${t.hosts.length} hosts, ${t.networks.length} networks, ${t.vms.length} VMs`,
        },
        ...t.links.map((l) =>
          s(
            'line',
            {
              class: `link ${l.kind} ${statusClass(l.status)}`,
              x1: l.x1,
              y1: l.y1,
              x2: l.x2,
              y2: l.y2,
              'data-link': `${l.from}->${l.network}`,
              'data-status': l.status,
            },
            s(
              'title',
              {},
              `${l.kind === 'vm' ? 'VM' : 'host'} ${l.from} – network ${l.network}: ${statusText[l.status]}`,
            ),
          ),
        ),
        ...t.networks.map((n) =>
          s(
            'g',
            { class: 'net', 'data-network': n.name },
            s('circle', { cx: n.x, cy: n.y, r: n.r }),
            s('text', { x: n.x, y: n.y + 4, 'text-anchor': 'middle' }, n.name),
            s('text', { x: n.x, y: n.y - n.r - 6, 'text-anchor': 'middle', class: 'sub' }, n.mode),
          ),
        ),
        ...t.hosts.map((ho) =>
          s(
            'g',
            { class: `host state-${ho.state}`, 'data-host': ho.name },
            s('rect', { x: ho.box.x, y: ho.box.y, width: ho.box.w, height: ho.box.h, rx: 6 }),
            s('text', { x: ho.box.x + 10, y: ho.box.y + 18 }, `${ho.name} (${ho.state})`),
          ),
        ),
        ...t.vms.map((v) =>
          s(
            'a',
            { href: `#/vms`, class: `vm state-${v.state}`, 'data-vm': v.name },
            s('rect', { x: v.box.x, y: v.box.y, width: v.box.w, height: v.box.h, rx: 4 }),
            s('text', { x: v.box.x + 8, y: v.box.y + 15 }, v.name),
            s('text', { x: v.box.x + 8, y: v.box.y + 28, class: 'sub' }, v.state),
          ),
        ),
      );
      replace(drawing, svg);
    };
    return live(ctx, load, 10_000, err);
  },
};
