import { expect, it } from 'vitest';
import { lbRows } from './lb.js';

it('lists LB checks with their status, a taken-out backend named first', () => {
  expect(
    lbRows([
      { lb: 'web', check: 'vip', to: '10.0.0.50 on h1, h2', detail: 'held by h1', ok: true },
      {
        lb: 'web',
        check: 'backend',
        from: 'h1',
        to: 'a2',
        detail: 'taken out: DOWN',
        takenOut: true,
        ok: true,
      },
      { lb: 'web', check: 'host', from: 'h2', to: 'h2', detail: 'no report', unmeasured: true, ok: false },
      { lb: 'web', check: 'reach', from: 'h1', to: '10.0.0.50:80', detail: '0 of 4', ok: false },
    ]).map((r) => [r.check, r.from, r.status, r.text]),
  ).toEqual([
    ['VIP held once', '', 'ok', 'held by h1'],
    ['backend', 'h1', 'ok', 'TAKEN OUT — taken out: DOWN'],
    ['LB host', 'h2', 'unmeasured', 'no report'],
    ['VIP reached', 'h1', 'mismatch', '0 of 4'],
  ]);
  expect(lbRows(undefined)).toEqual([]);
});
