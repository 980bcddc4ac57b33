// VMs: desired and observed state, host, size, addresses, problems; start/stop (after a confirmation) for operators,
// and the serial console of each VM (views/console.ts).
import { api } from '../api.js';
import { confirmDialog, h, replace } from '../dom.js';
import type { VmItem } from '../lib/types.js';
import { errorLine, header, live, messageOf, type View } from './view.js';

export const vmsView: View = {
  id: 'vms',
  title: 'VMs',
  mount(root, ctx) {
    const err = errorLine();
    const note = h('p', { class: 'meta', role: 'status' });
    const body = h('div', { class: 'scroll' });
    let reload = () => {};
    const power = async (vm: VmItem, action: 'start' | 'stop') => {
      const ok = await confirmDialog(
        `${action === 'start' ? 'Start' : 'Stop'} ${vm.name}?`,
        action === 'start'
          ? `Start VM ${vm.name} on host ${vm.host}.`
          : `Stop VM ${vm.name} on host ${vm.host}: its guest is asked to shut down.`,
        action === 'start' ? 'Start' : 'Stop',
      );
      if (!ok) return;
      replace(note, `${action === 'start' ? 'Starting' : 'Stopping'} ${vm.name}…`);
      try {
        await (action === 'start' ? api.start(vm.name) : api.stop(vm.name));
        replace(note, `${vm.name}: ${action} requested.`);
        err.clear();
      } catch (e) {
        replace(note);
        err.show(messageOf(e));
      }
      reload();
    };
    const row = (v: VmItem) =>
      h(
        'tr',
        { 'data-vm': v.name },
        h('th', { scope: 'row' }, v.name),
        h('td', {}, v.host),
        h('td', { class: `state state-${v.state}`, 'data-testid': 'vm-state' }, v.state),
        h('td', {}, v.desired),
        h('td', {}, v.cpus ?? '—'),
        h('td', {}, v.memoryMiB === undefined ? '—' : `${v.memoryMiB} MiB`),
        h('td', {}, v.nics.map((n) => `${n.network}: ${n.addresses.join(', ') || '—'}`).join('; ')),
        h('td', { class: v.problems.length ? 'problems' : '' }, v.problems.join('; ') || '—'),
        h(
          'td',
          { class: 'actions' },
          ctx.canOperate &&
            h(
              'button',
              {
                type: 'button',
                class: 'btn',
                'data-action': 'start',
                disabled: v.state === 'running',
                onclick: () => void power(v, 'start'),
              },
              'Start',
            ),
          ctx.canOperate &&
            h(
              'button',
              {
                type: 'button',
                class: 'btn',
                'data-action': 'stop',
                disabled: v.state !== 'running',
                onclick: () => void power(v, 'stop'),
              },
              'Stop',
            ),
          h(
            'a',
            { class: 'btn', href: `#/console/${encodeURIComponent(v.name)}`, 'data-action': 'console' },
            'Console',
          ),
        ),
      );
    replace(
      root,
      header('VMs'),
      err.el,
      ctx.canOperate
        ? null
        : h('p', { class: 'meta' }, 'Read-only session: you can watch, not start or stop.'),
      note,
      body,
    );
    const load = async () => {
      const vms = (await api.vms()).sort((a, b) => a.name.localeCompare(b.name));
      replace(
        body,
        vms.length === 0
          ? h('p', {}, 'No VMs: apply a spec with VMs first.')
          : h(
              'table',
              { class: 'list', 'data-testid': 'vms' },
              h(
                'thead',
                {},
                h(
                  'tr',
                  {},
                  ...['Name', 'Host', 'State', 'Desired', 'CPUs', 'Memory', 'Addresses', 'Problems', ''].map(
                    (t) => h('th', { scope: 'col' }, t),
                  ),
                ),
              ),
              h('tbody', {}, ...vms.map(row)),
            ),
      );
    };
    const stop = live(ctx, load, 5000, err, (e) => e.kind.startsWith('vm') || e.kind.startsWith('apply'));
    reload = () => void load().catch(err.show);
    return stop;
  },
};
