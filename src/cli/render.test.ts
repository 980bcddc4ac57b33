import { expect, it } from 'vitest';
import { renderMatrix, table } from './render.js';

it('aligns tables', () => {
  expect(
    table(
      ['a', 'bb'],
      [
        ['xxx', 1],
        [undefined, 'y'],
      ],
    ),
  ).toBe('a    bb\nxxx  1\n-    y');
});

it('renders a matrix with RTTs, blocked cells, forwards and mismatches', () => {
  const text = renderMatrix({
    endpoints: [
      { id: 'pc1', kind: 'peer', address: '192.168.50.20' },
      { id: 'web1', kind: 'vm', address: '10.10.0.10', host: 'host1', network: 'natnet' },
    ],
    cells: [
      {
        from: 'web1',
        to: 'pc1',
        kind: 'ping',
        expected: true,
        observed: true,
        rttMs: 0.42,
        detail: 'echo reply',
        ok: true,
      },
      {
        from: 'pc1',
        to: 'web1',
        kind: 'ping',
        expected: false,
        observed: true,
        rttMs: 1,
        detail: 'echo reply',
        ok: false,
      },
      {
        from: 'pc1',
        to: '192.168.50.10:8080 (web1)',
        kind: 'forward',
        expected: true,
        observed: true,
        rttMs: 12,
        detail: 'vmlink-guest web1',
        ok: true,
      },
    ],
    ok: false,
    mismatches: 1,
    measuredAt: '2026-01-01T00:00:00Z',
    durationMs: 1234,
  });
  expect(text).toContain('ok 0.42ms');
  expect(text).toContain('FAIL:reachable');
  expect(text).toContain('vmlink-guest web1');
  expect(text).toContain('pc1 -> web1 (ping): expected unreachable, measured reachable');
  expect(text.trim().split('\n').pop()).toBe('NOT verified: 1 of 3 cells differ from the topology.');
});
