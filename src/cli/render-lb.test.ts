import { expect, it } from 'vitest';
import { lbMismatchLines, renderLbChecks } from './render-lb.js';

it('renders LB checks with taken-out backends named, and lists failed ones as mismatches', () => {
  const r = {
    loadBalancers: [
      {
        lb: 'web',
        check: 'vip' as const,
        to: '10.30.0.50 on host1, host2',
        detail: 'held by host1',
        ok: true,
      },
      {
        lb: 'web',
        check: 'backend' as const,
        from: 'host1',
        to: 'web2',
        detail: 'taken out: DOWN in HAProxy on host1; directly: Connection refused',
        takenOut: true,
        ok: true,
      },
      {
        lb: 'web',
        check: 'reach' as const,
        from: 'host1',
        to: '10.30.0.50:80',
        port: 80,
        detail: '0 of 4 requests answered',
        ok: false,
      },
    ],
  };
  const text = renderLbChecks(r);
  expect(text).toMatch(/web\s+backend\s+host1\s+web2\s+ok, TAKEN OUT: taken out: DOWN in HAProxy on host1/);
  expect(text).toMatch(/VIP reached\s+host1\s+10\.30\.0\.50:80\s+FAIL: 0 of 4/);
  expect(lbMismatchLines(r)).toEqual([
    '  load balancer web VIP reached from host1 -> 10.30.0.50:80: 0 of 4 requests answered',
  ]);
  expect(renderLbChecks({})).toBe('');
});
