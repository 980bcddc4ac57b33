import { expect, it } from 'vitest';
import { lbMismatchLines, renderLbChecks, renderLbStatus } from './render-lb.js';

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

it("adds one line per LB to status: the VIP holder, backends UP, each host's problems", () => {
  const lb = (o: object) => ({
    name: 'web',
    configHash: 'h',
    haproxy: true,
    keepalived: true,
    holdsVip: false,
    problems: [] as string[],
    ...o,
  });
  const host = (name: string, o: object) =>
    ({ name, report: { loadBalancers: [lb(o)] } }) as unknown as Parameters<typeof renderLbStatus>[0][number];
  expect(
    renderLbStatus([
      host('host1', { holdsVip: true, backendsUp: ['a1'] }),
      host('host2', { haproxy: false, problems: ['HAProxy is not running'] }),
    ]),
  ).toEqual(['load balancer web: VIP on host1; backends UP: a1; host2: HAProxy is not running']);
  expect(renderLbStatus([host('host1', {}), host('host2', {})])).toEqual([
    'load balancer web: VIP ON NO HOST; backends UP: ?',
  ]);
});
