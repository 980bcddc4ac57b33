import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { renderLbList } from '../cli/render-lb.js';
import type { ObservedLb } from '../shared/lb.js';
import type { HostReport } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { lbViews } from './lb-views.js';

const spec = loadSpec(readFileSync(new URL('../../examples/lb.yaml', import.meta.url), 'utf8'), 'lb.yaml');
const host = (name: string, lb?: Partial<ObservedLb>) => ({
  name,
  reachable: true,
  report: {
    loadBalancers: lb
      ? [
          {
            name: 'web',
            configHash: 'h',
            haproxy: true,
            keepalived: true,
            holdsVip: false,
            problems: [],
            ...lb,
          },
        ]
      : [],
  } as unknown as HostReport,
});

it('shows the VIP holder, backends as the holder HAProxy sees them, and each host', () => {
  const [v] = lbViews(spec, [
    host('host1', { backendsUp: ['web1', 'web2'] }),
    host('host2', { holdsVip: true, backendsUp: ['web1'] }),
  ]);
  expect(v).toMatchObject({
    name: 'web',
    vip: '10.30.0.50',
    vipHolders: ['host2'],
    statsFrom: 'host2',
    frontends: [{ port: 80, protocol: 'http', backendPort: 80 }],
    backends: [
      { vm: 'web1', address: '10.30.0.11', state: 'UP' },
      { vm: 'web2', address: '10.30.0.12', state: 'DOWN' },
    ],
  });
  expect(v!.hosts.map((h) => [h.host, h.priority, h.holdsVip, h.haproxy])).toEqual([
    ['host1', 150, false, true],
    ['host2', 140, true, true],
  ]);
  const text = renderLbList([v!]);
  expect(text).toContain('web: VIP 10.30.0.50 on app, held by host2');
  expect(text).toContain('backends (HAProxy on host2): web1 10.30.0.11 UP, web2 10.30.0.12 DOWN');
});

it('says what it does not know: an unreachable agent, an LB missing on a host, no stats', () => {
  const [v] = lbViews(spec, [
    { name: 'host1', reachable: false, error: 'connect ECONNREFUSED\nmore' },
    host('host2'),
  ]);
  expect(v!.vipHolders).toEqual([]);
  expect(v!.backends.every((b) => b.state === 'unknown')).toBe(true);
  expect(v!.hosts.map((h) => h.problems)).toEqual([
    ['agent unreachable: connect ECONNREFUSED'],
    ['not on the host (apply the spec)'],
  ]);
  expect(renderLbList([v!])).toContain('HELD BY NO HOST');
});
