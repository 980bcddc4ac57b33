import type { VerifyResult } from '../controller/verify.js';

/** Renders rows as an aligned text table with a header line. */
export function table(headers: string[], rows: Array<Array<string | number | undefined>>): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === undefined ? '-' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '))
    .join('\n');
}

function mark(c: { expected: boolean; observed: boolean; rttMs?: number }): string {
  if (c.expected && c.observed)
    return c.rttMs === undefined ? 'ok' : `ok ${c.rttMs < 10 ? c.rttMs.toFixed(2) : c.rttMs.toFixed(0)}ms`;
  if (!c.expected && !c.observed) return 'blocked';
  return c.expected ? 'FAIL:unreachable' : 'FAIL:reachable';
}

/** Renders a verify result as a from/to matrix plus a forward table and a one-line verdict. */
export function renderMatrix(r: VerifyResult): string {
  const ids = r.endpoints.map((e) => e.id);
  const ping = r.cells.filter((c) => c.kind === 'ping');
  const rows = ids.map((from) => [
    from,
    ...ids.map((to) =>
      from === to
        ? ''
        : (() => {
            const c = ping.find((x) => x.from === from && x.to === to);
            return c ? mark(c) : '';
          })(),
    ),
  ]);
  const out = [
    'Endpoints:',
    table(
      ['endpoint', 'kind', 'address', 'where'],
      r.endpoints.map((e) => [
        e.id,
        e.kind,
        e.address ?? 'unknown',
        e.network ? `${e.network} on ${e.host}` : (e.host ?? ''),
      ]),
    ),
    '',
    'Reachability (rows reach columns; ok = expected and measured, blocked = expected and measured unreachable):',
    table(['from \\ to', ...ids], rows),
  ];
  const fwd = r.cells.filter((c) => c.kind === 'forward');
  if (fwd.length) {
    out.push(
      '',
      'Port forwards:',
      table(
        ['from', 'forward', 'expected', 'result', 'answer'],
        fwd.map((c) => [c.from, c.to, c.expected ? 'reach' : 'blocked', mark(c), c.detail]),
      ),
    );
  }
  const bad = r.cells.filter((c) => !c.ok);
  if (bad.length) {
    out.push(
      '',
      'Mismatches:',
      ...bad.map(
        (c) =>
          `  ${c.from} -> ${c.to} (${c.kind}): expected ${c.expected ? 'reachable' : 'unreachable'}, measured ${c.observed ? 'reachable' : 'unreachable'} (${c.detail})`,
      ),
    );
  }
  out.push(
    '',
    r.ok
      ? `Verified: all ${r.cells.length} cells match the topology (${(r.durationMs / 1000).toFixed(1)} s).`
      : `NOT verified: ${r.mismatches} of ${r.cells.length} cells differ from the topology.`,
  );
  return out.join('\n');
}
