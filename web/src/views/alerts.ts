// Alerts: the instances of the applied spec's rules (firing first), their silences, and the rules themselves.
import { api } from '../api.js';
import { ago, h, replace } from '../dom.js';
import type { AlertInstance } from '../lib/types.js';
import { errorLine, header, live, type View } from './view.js';

const ORDER = { firing: 0, pending: 1, resolved: 2 } as const;
const labelsText = (l: Record<string, string>) =>
  Object.entries(l)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');

function instanceRow(a: AlertInstance): HTMLElement {
  const notes = [
    a.silencedBy && `silenced (${a.silencedBy})`,
    a.acknowledgedBy && `acknowledged by ${a.acknowledgedBy}`,
  ]
    .filter(Boolean)
    .join('; ');
  return h(
    'tr',
    { class: `alert-${a.state}`, 'data-rule': a.rule },
    h('td', { class: `sev-${a.severity}` }, a.state),
    h('td', {}, a.severity),
    h('th', { scope: 'row' }, a.rule),
    h('td', {}, labelsText(a.labels) || '—'),
    h('td', {}, a.summary),
    h('td', {}, ago(a.firedAt ?? a.activeSince)),
    h('td', {}, notes || '—'),
  );
}

export const alertsView: View = {
  id: 'alerts',
  title: 'Alerts',
  mount(root, ctx) {
    const err = errorLine();
    const body = h('div', { 'data-testid': 'alerts' });
    replace(root, header('Alerts'), err.el, body);
    const load = async () => {
      const v = await api.alerts();
      const inst = [...v.instances].sort(
        (a, b) => ORDER[a.state] - ORDER[b.state] || a.rule.localeCompare(b.rule),
      );
      const firing = inst.filter((i) => i.state === 'firing').length;
      replace(
        body,
        h(
          'p',
          { class: 'meta' },
          `${firing} firing, ${inst.length - firing} pending or resolved; rules evaluated ${ago(v.evaluatedAt)}.`,
        ),
        inst.length === 0
          ? h('p', {}, 'No alert instances.')
          : h(
              'table',
              { class: 'list' },
              h(
                'thead',
                {},
                h(
                  'tr',
                  {},
                  ...['State', 'Severity', 'Rule', 'Labels', 'Summary', 'Since', 'Notes'].map((t) =>
                    h('th', { scope: 'col' }, t),
                  ),
                ),
              ),
              h('tbody', {}, ...inst.map(instanceRow)),
            ),
        v.silences.length > 0 &&
          h(
            'div',
            {},
            h('h2', {}, 'Silences'),
            h(
              'ul',
              {},
              ...v.silences.map((si) =>
                h(
                  'li',
                  {},
                  `${si.rule} until ${si.until} by ${si.createdBy}${si.comment ? `: ${si.comment}` : ''}`,
                ),
              ),
            ),
          ),
        h('h2', {}, `Rules (${v.rules.length})`),
        v.rules.length === 0
          ? h('p', { class: 'meta' }, 'The applied spec has no alert rules.')
          : h(
              'ul',
              { class: 'rules' },
              ...v.rules.map((r) =>
                h('li', {}, `${r.name}: ${r.expr} ${r.op} ${r.threshold} for ${r.for} (${r.severity})`),
              ),
            ),
      );
    };
    return live(ctx, load, 10_000, err, (e) => e.kind.startsWith('alert'));
  },
};
