import { expect, it } from 'vitest';
import { renderMatrix, renderPmtu, renderThroughput, table } from './render.js';

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
    pmtu: [],
    routers: [],
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

it('renders path-MTU checks, routers and unasserted cells, and counts PMTU mismatches in the verdict', () => {
  const text = renderMatrix({
    endpoints: [
      { id: 'a1', kind: 'vm', address: '10.20.0.100', host: 'host1', network: 'prod100' },
      { id: 'b1', kind: 'vm', address: '10.30.0.100', host: 'host2', network: 'test200' },
    ],
    cells: [
      {
        from: 'a1',
        to: 'b1',
        kind: 'ping',
        expected: 'any',
        observed: true,
        rttMs: 1.5,
        detail: 'echo reply',
        ok: true,
      },
      { from: 'b1', to: 'a1', kind: 'ping', expected: 'any', observed: false, detail: 'no reply', ok: true },
    ],
    pmtu: [
      {
        network: 'ov1',
        from: 'x1',
        to: 'x2',
        expectedMtu: 1450,
        measuredMtu: 1450,
        ok: true,
        detail: 'full MTU passes',
      },
      {
        network: 'ov2',
        from: 'y1',
        to: 'y2',
        expectedMtu: 1450,
        measuredMtu: 1400,
        ok: false,
        detail: 'largest passing MTU 1400 < 1450',
      },
    ],
    routers: [{ vm: 'r1', host: 'host1', networks: ['prod100', 'test200'] }],
    ok: false,
    mismatches: 1,
    measuredAt: '2026-01-01T00:00:00Z',
    durationMs: 1000,
  });
  expect(text).toContain('any:reach 1.50ms');
  expect(text).toContain('any:blocked');
  expect(text).toContain('r1 on host1: prod100, test200');
  expect(text).toContain('Path MTU');
  expect(text).toMatch(/ov1\s+x1\s+x2\s+1450\s+1450\s+ok/);
  expect(text).toMatch(/ov2\s+y1\s+y2\s+1450\s+1400\s+MISMATCH: largest passing MTU 1400 < 1450/);
  expect(text).toContain('y1 -> y2 (path MTU on ov2): expected 1450, measured 1400');
  expect(text.trim().split('\n').pop()).toBe('NOT verified: 1 of 4 checks differ from the topology.');
});

it('renders PMTU tables only when there are checks, and throughput as a row', () => {
  expect(renderPmtu({ pmtu: [] })).toBe('');
  expect(renderThroughput({ from: 'a1', to: 'b1', mbps: 941.234, retransmits: 0, durationS: 3 })).toBe(
    'from  to  Mbit/s  retransmits  seconds\na1    b1  941.2   0            3',
  );
  expect(renderThroughput({ from: 'pc1', to: 'web1', mbps: 12, durationS: 3.01 })).toMatch(
    /pc1\s+web1\s+12.0\s+-\s+3.01/,
  );
});

it('shows security-group blocks apart from topology blocks and failures, with port checks in their own section', () => {
  const port = (from: string, p: number, expected: boolean, observed: boolean, rule: string) => ({
    from,
    to: 'app1',
    kind: 'port' as const,
    protocol: 'tcp' as const,
    port: p,
    expected,
    observed,
    detail: observed ? 'vmlink-guest app1' : 'timed out',
    rule,
    ...(expected ? {} : { blockedBy: 'security-group' as const }),
    ok: expected === observed,
  });
  const text = renderMatrix({
    endpoints: [
      { id: 'pc1', kind: 'peer', address: '192.168.50.20' },
      { id: 'app1', kind: 'vm', address: '192.168.50.101', host: 'host1', network: 'lan' },
      { id: 'upstream', kind: 'upstream', address: '203.0.113.10' },
    ],
    cells: [
      {
        from: 'pc1',
        to: 'app1',
        kind: 'ping',
        expected: false,
        blockedBy: 'security-group',
        rule: 'no ingress rule of app allows icmp from 192.168.50.20',
        observed: false,
        detail: 'no reply',
        ok: true,
      },
      {
        from: 'upstream',
        to: 'app1',
        kind: 'ping',
        expected: false,
        blockedBy: 'topology',
        observed: false,
        detail: 'no reply',
        ok: true,
      },
      port('pc1', 22, true, true, 'allowed in by ssh: ingress tcp 22 from 192.168.50.20/32'),
      port('pc1', 9, false, true, 'no ingress rule of app, ssh allows tcp 9 from 192.168.50.20'),
    ],
    pmtu: [],
    routers: [],
    notes: ['web1: not port-checked (only the test guest runs the listeners the checks need)'],
    ok: false,
    mismatches: 1,
    measuredAt: '2026-01-01T00:00:00Z',
    durationMs: 1000,
  });
  const lines = text.split('\n');
  const row = (start: string) => lines.find((l) => l.startsWith(start)) ?? '';
  // Matrix rows (after the endpoint table's rows, which start the same).
  const matrix = lines.slice(lines.findIndex((l) => l.startsWith('from \\ to')));
  const mrow = (start: string) => matrix.find((l) => l.startsWith(start)) ?? '';
  expect(mrow('pc1 ')).toContain('sg-blocked');
  expect(mrow('upstream ')).toMatch(/\bblocked\b/);
  expect(mrow('upstream ')).not.toContain('sg-blocked');
  expect(text).toContain('Security groups (TCP');
  expect(row('pc1   app1  tcp/22 ')).toContain('allowed in by ssh: ingress tcp 22 from 192.168.50.20/32');
  expect(row('pc1   app1  tcp/9 ')).toContain('FAIL:reachable');
  expect(text).toContain(
    '  pc1 -> app1 tcp/9 (port): expected unreachable, measured reachable (vmlink-guest app1) [no ingress rule of app, ssh allows tcp 9 from 192.168.50.20]',
  );
  expect(text).toContain('Notes:\n  web1: not port-checked');
  expect(lines.pop()).toBe('NOT verified: 1 of 4 cells differ from the topology.');
});

it('renders storage checks beside the matrix, failures with their evidence', () => {
  const text = renderMatrix({
    endpoints: [],
    cells: [],
    pmtu: [],
    routers: [],
    storage: [
      {
        check: 'portal',
        host: 'host1',
        volume: 'san',
        target: '192.168.50.30:3260 (iscsi)',
        ok: true,
        detail: 'connected',
        ms: 2,
      },
      {
        check: 'io',
        host: 'host2',
        vm: 'web',
        disk: 'data',
        volume: 'nas/web-data',
        target: 'nfs://192.168.50.30/vmlink/nas/web-data.qcow2',
        ok: false,
        detail: 'the guest of web cannot use disk data: no disk with serial data in /sys/block',
      },
    ],
    ok: false,
    mismatches: 1,
    measuredAt: '2026-01-01T00:00:00Z',
    durationMs: 1000,
  });
  expect(text).toContain('Storage paths');
  expect(text).toMatch(/portal\s+host1\s+san\s+192.168.50.30:3260 \(iscsi\)\s+ok 2.00ms/);
  expect(text).toMatch(/guest I\/O\s+web\/data on host2\s+nas\/web-data/);
  expect(text).toContain(
    '  storage guest I/O nas/web-data (nfs://192.168.50.30/vmlink/nas/web-data.qcow2): the guest',
  );
  expect(text.trim().split('\n').pop()).toBe('NOT verified: 1 of 2 checks differ from the topology.');
});
