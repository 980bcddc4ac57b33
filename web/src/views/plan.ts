// The plan of a spec before applying it: paste the YAML or pick a file, and see what apply would change (POST
// /v1/plan computes it; nothing is applied from here). Operators only (the API refuses a read-only session).
import { api } from '../api.js';
import { h, replace } from '../dom.js';
import type { PlanResult } from '../lib/types.js';
import { errorLine, header, messageOf, type View } from './view.js';

/** The API takes specs up to 4 MiB. */
const SPEC_MAX = 4 * 1024 * 1024;

function render(p: PlanResult): HTMLElement {
  const sm = p.summary;
  return h(
    'div',
    { 'data-testid': 'plan' },
    h(
      'p',
      { class: 'summary' },
      `${sm.create} to create, ${sm.update} to update, ${sm.delete} to delete, ${sm.start} to start, ${sm.stop} to stop; ${p.plan.unchanged.length} unchanged.`,
    ),
    p.protectedDeletions.length > 0 &&
      h(
        'p',
        { class: 'error' },
        `Apply would refuse: it deletes protected VMs ${p.protectedDeletions.map((d) => `${d.name} (on ${d.host})`).join(', ')}.`,
      ),
    p.losses.length > 0 &&
      h(
        'p',
        { class: 'warning' },
        `Destroys data: ${p.losses.map((l) => `${l.kind} ${l.name} on ${l.host}`).join(', ')}.`,
      ),
    p.plan.steps.length === 0
      ? h('p', {}, 'Nothing to change: the site already matches this spec.')
      : h(
          'table',
          { class: 'list' },
          h(
            'thead',
            {},
            h('tr', {}, ...['#', 'Step', 'Host', 'Why'].map((t) => h('th', { scope: 'col' }, t))),
          ),
          h(
            'tbody',
            {},
            ...p.plan.steps.map((st, i) =>
              h(
                'tr',
                {},
                h('td', {}, i + 1),
                h('td', {}, st.kind),
                h('td', {}, st.host),
                h('td', {}, st.reason),
              ),
            ),
          ),
        ),
    h('details', {}, h('summary', {}, 'Plan as `vmlink plan` prints it'), h('pre', {}, p.text)),
  );
}

export const planView: View = {
  id: 'plan',
  title: 'Plan',
  mount(root, ctx) {
    const err = errorLine();
    const text = h('textarea', {
      id: 'spec-text',
      rows: 16,
      spellcheck: 'false',
      placeholder: 'version: 1\nhosts: …',
      'aria-label': 'Spec (YAML)',
    });
    const file = h('input', { type: 'file', id: 'spec-file', accept: '.yaml,.yml,text/yaml' });
    let source = 'browser';
    file.addEventListener('change', async () => {
      const f = file.files?.[0];
      if (!f) return;
      if (f.size > SPEC_MAX) {
        err.show(`${f.name} is ${f.size} bytes: a spec may be at most 4 MiB.`);
        return;
      }
      text.value = await f.text();
      source = f.name;
      err.clear();
    });
    const out = h('div', { class: 'plan-out' });
    const btn = h('button', { type: 'submit', class: 'btn primary' }, 'Show plan');
    const form = h(
      'form',
      { class: 'plan-form' },
      h('label', { for: 'spec-text' }, 'Spec (YAML): paste it, or choose a file '),
      file,
      text,
      h('div', { class: 'actions' }, btn, h('span', { class: 'meta' }, 'Nothing is applied from here.')),
    );
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const spec = text.value;
      if (!spec.trim()) {
        err.show('Paste a spec or choose a file first.');
        return;
      }
      if (spec.length > SPEC_MAX) {
        err.show('A spec may be at most 4 MiB.');
        return;
      }
      btn.disabled = true;
      replace(out, h('p', { class: 'meta', role: 'status' }, 'planning…'));
      try {
        replace(out, render(await api.plan(spec, source)));
        err.clear();
      } catch (x) {
        replace(out);
        err.show(messageOf(x));
      } finally {
        btn.disabled = false;
      }
    });
    replace(
      root,
      header('Plan of a spec'),
      ctx.canOperate
        ? null
        : h(
            'p',
            { class: 'meta' },
            'Read-only session: planning needs the operator role; the controller will refuse.',
          ),
      form,
      err.el,
      out,
    );
    return () => {};
  },
};
