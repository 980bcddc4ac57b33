// The last verify matrix: endpoints as rows (from) and columns (to), each pair's cells summarised by their worst
// status with every cell in its tooltip, and the mismatches listed in words below. Operators can run a verify.
import { api } from '../api.js';
import { ago, h, replace } from '../dom.js';
import { lbRows } from '../lib/lb.js';
import {
  cellStatus,
  cellsByPair,
  describeCell,
  orderedEndpoints,
  statusClass,
  worst,
} from '../lib/matrix.js';
import type { VerifyResult } from '../lib/types.js';
import { errorLine, header, live, messageOf, type View } from './view.js';

const SYMBOL = { ok: '✓', mismatch: '✗', unmeasured: '?', none: '' } as const;

function table(v: VerifyResult): HTMLElement {
  const eps = orderedEndpoints(v);
  const pairs = cellsByPair(v.cells);
  return h(
    'table',
    { class: 'matrix', 'data-testid': 'matrix' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', { scope: 'col' }, 'from \\ to'),
        ...eps.map((e) => h('th', { scope: 'col' }, e.id)),
      ),
    ),
    h(
      'tbody',
      {},
      ...eps.map((from) =>
        h(
          'tr',
          {},
          h('th', { scope: 'row' }, from.id),
          ...eps.map((to) => {
            const cells = pairs.get(`${from.id}\u0000${to.id}`) ?? [];
            const st = worst(cells.map(cellStatus));
            return h(
              'td',
              {
                class: statusClass(st),
                title: cells.map(describeCell).join('\n'),
                'data-from': from.id,
                'data-to': to.id,
                'data-status': st,
              },
              SYMBOL[st],
            );
          }),
        ),
      ),
    ),
  );
}

/** The load-balancer checks (verify's LB cells), or nothing when the spec has no load balancer. */
function lbTable(v: VerifyResult): HTMLElement | null {
  const rows = lbRows(v.loadBalancers);
  if (!rows.length) return null;
  return h(
    'div',
    {},
    h('h2', {}, 'Load balancers'),
    h(
      'table',
      { class: 'list', 'data-testid': 'lb-checks' },
      h(
        'thead',
        {},
        h('tr', {}, ...['LB', 'check', 'from', 'to', '', 'result'].map((t) => h('th', { scope: 'col' }, t))),
      ),
      h(
        'tbody',
        {},
        ...rows.map((r) =>
          h(
            'tr',
            { 'data-status': r.status },
            h('td', {}, r.lb),
            h('td', {}, r.check),
            h('td', {}, r.from),
            h('td', {}, r.to),
            h('td', { class: statusClass(r.status) }, SYMBOL[r.status]),
            h('td', {}, r.text),
          ),
        ),
      ),
    ),
  );
}

export const matrixView: View = {
  id: 'matrix',
  title: 'Matrix',
  mount(root, ctx) {
    const err = errorLine();
    const meta = h('p', { class: 'meta' });
    const body = h('div', { class: 'scroll' });
    const mismatches = h('div');
    const lbs = h('div');
    const runBtn = h('button', { class: 'btn', type: 'button' }, 'Run verify');
    const progress = h('span', { class: 'meta', role: 'status' });
    let current: VerifyResult | undefined;
    let stopped = false;
    const render = () => {
      const v = current;
      if (!v) {
        replace(meta, 'No verify has run yet.');
        replace(body);
        replace(lbs);
        replace(mismatches);
        return;
      }
      replace(
        meta,
        `Measured ${ago(v.measuredAt)} in ${(v.durationMs / 1000).toFixed(1)} s: ${v.cells.length} cells${v.loadBalancers?.length ? `, ${v.loadBalancers.length} load-balancer checks` : ''}, ${v.mismatches} mismatch(es) — ${v.ok ? 'everything as expected' : 'NOT everything as expected'}.`,
      );
      replace(body, table(v));
      replace(lbs, lbTable(v));
      const bad = v.cells.filter((c) => cellStatus(c) === 'mismatch');
      replace(
        mismatches,
        bad.length
          ? h(
              'div',
              {},
              h('h2', {}, 'Mismatches'),
              h('ul', { class: 'mismatches' }, ...bad.map((c) => h('li', {}, describeCell(c)))),
            )
          : null,
      );
    };
    runBtn.addEventListener('click', async () => {
      runBtn.disabled = true;
      replace(progress, 'verifying…');
      try {
        const { taskId } = await api.startVerify();
        for (;;) {
          await new Promise((r) => setTimeout(r, 1000));
          if (stopped) return;
          const t = await api.task(taskId);
          if (t.state === 'running') continue;
          if (t.state !== 'succeeded') throw new Error(`The verify ${t.state}: ${t.error?.message ?? ''}`);
          break;
        }
        current = await api.lastVerify();
        render();
        replace(progress, 'done');
        err.clear();
      } catch (e) {
        err.show(messageOf(e));
        replace(progress);
      } finally {
        runBtn.disabled = false;
      }
    });
    replace(root, header('Matrix', ctx.canOperate && runBtn, progress), err.el, meta, body, lbs, mismatches);
    const stop = live(
      ctx,
      async () => {
        current = await api.lastVerify();
        render();
      },
      30_000,
      err,
      (e) => e.kind === 'verify',
    );
    return () => {
      stopped = true;
      stop();
    };
  },
};
