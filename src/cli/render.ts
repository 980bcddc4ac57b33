import type { MatrixCell, ThroughputResult, VerifyResult } from '../controller/wire.js';
import { lbMismatchLines, renderLbChecks } from './render-lb.js';

/** Renders rows as an aligned text table with a header line. */
export function table(headers: string[], rows: Array<Array<string | number | undefined>>): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === undefined ? '-' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '))
    .join('\n');
}

function rtt(ms: number): string {
  return `${ms < 10 ? ms.toFixed(2) : ms.toFixed(0)}ms`;
}

function mark(c: Pick<MatrixCell, 'expected' | 'observed' | 'rttMs' | 'unmeasured' | 'blockedBy'>): string {
  // Not asserted (a router VM joins both networks, or the probe cannot tell): show what was measured.
  if (c.expected === 'any')
    return c.observed ? `any:reach${c.rttMs === undefined ? '' : ` ${rtt(c.rttMs)}`}` : 'any:blocked';
  if (c.unmeasured) return 'FAIL:unmeasured';
  if (c.expected && c.observed) return c.rttMs === undefined ? 'ok' : `ok ${rtt(c.rttMs)}`;
  // Expected unreachable because a security group says so: a result, shown apart from the topology's blocks.
  if (!c.expected && !c.observed) return c.blockedBy === 'security-group' ? 'sg-blocked' : 'blocked';
  return c.expected ? 'FAIL:unreachable' : 'FAIL:reachable';
}

function expectedText(e: MatrixCell['expected']): string {
  return e === 'any' ? 'anything (not asserted)' : e ? 'reachable' : 'unreachable';
}

/** Renders the path-MTU checks of a verify result (empty string when there are none). */
export function renderPmtu(r: Pick<VerifyResult, 'pmtu'>): string {
  const rows = r.pmtu ?? [];
  if (!rows.length) return '';
  return [
    "Path MTU (don't-fragment pings between two VMs per network):",
    table(
      ['network', 'from', 'to', 'expected', 'measured', 'result'],
      rows.map((p) => [
        p.network,
        p.from,
        p.to,
        p.expectedMtu,
        p.measuredMtu ?? 'none',
        p.ok ? 'ok' : `MISMATCH: ${p.detail}`,
      ]),
    ),
  ].join('\n');
}

const STORAGE_CHECK_NAMES = { portal: 'portal', open: 'open in QEMU', io: 'guest I/O' } as const;

/** Renders the storage checks of a verify result (empty string when there are none). */
export function renderStorageChecks(r: Pick<VerifyResult, 'storage'>): string {
  const rows = r.storage ?? [];
  if (!rows.length) return '';
  return [
    'Storage paths (each compute host reaches each portal it uses; each volume is open in its QEMU; the guest reads its last 4 KiB and writes them back):',
    table(
      ['check', 'where', 'volume', 'target', 'result'],
      rows.map((c) => [
        STORAGE_CHECK_NAMES[c.check],
        c.vm ? `${c.vm}/${c.disk} on ${c.host}` : c.host,
        c.volume,
        c.target,
        c.ok
          ? `ok${c.ms === undefined ? '' : ` ${rtt(c.ms)}`}`
          : `${c.unmeasured ? 'FAIL:unmeasured' : 'FAIL'}: ${c.detail}`,
      ]),
    ),
  ].join('\n');
}

/** Renders the security-group port checks of a verify result (empty string when there are none). */
export function renderPortChecks(r: Pick<VerifyResult, 'cells'>): string {
  const rows = r.cells.filter((c) => c.kind === 'port');
  if (!rows.length) return '';
  return [
    'Security groups (TCP to ports of VM NICs with groups: each rule port, and one no rule names; a listener runs in the guest):',
    table(
      ['from', 'to', 'port', 'expected', 'result', 'why'],
      rows.map((c) => [
        c.from,
        c.to,
        `${c.protocol ?? 'tcp'}/${c.port ?? '?'}`,
        c.expected ? 'reach' : 'blocked',
        mark(c),
        c.unmeasured || (c.observed && !c.expected) ? `${c.rule ?? ''}: ${c.detail}` : (c.rule ?? ''),
      ]),
    ),
  ].join('\n');
}

/** Renders one throughput measurement as a one-row table. */
export function renderThroughput(t: ThroughputResult): string {
  return table(
    ['from', 'to', 'Mbit/s', 'retransmits', 'seconds'],
    [[t.from, t.to, t.mbps.toFixed(1), t.retransmits, t.durationS]],
  );
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
    'Reachability by ping (rows reach columns; ok = expected and measured; blocked = the topology, sg-blocked = a security group keeps it out, as expected):',
    table(['from \\ to', ...ids], rows),
  ];
  const routers = r.routers ?? [];
  if (routers.length) {
    out.push(
      '',
      'Routers (VMs with trunk NICs, left out of the matrix; cells between networks one of them joins are not asserted, shown as any:):',
      ...routers.map((x) => `  ${x.vm} on ${x.host}: ${x.networks.join(', ')}`),
    );
  }
  const fwd = r.cells.filter((c) => c.kind === 'forward');
  if (fwd.length) {
    out.push(
      '',
      'Port forwards:',
      table(
        ['from', 'forward', 'expected', 'result', 'answer'],
        fwd.map((c) => [
          c.from,
          c.to,
          c.expected === 'any' ? 'any' : c.expected ? 'reach' : 'blocked',
          mark(c),
          c.rule ? `${c.detail} (${c.rule})` : c.detail,
        ]),
      ),
    );
  }
  const ports = renderPortChecks(r);
  if (ports) out.push('', ports);
  if (r.notes?.length) out.push('', 'Notes:', ...r.notes.map((n) => `  ${n}`));
  const pmtu = renderPmtu(r);
  if (pmtu) out.push('', pmtu);
  const storage = renderStorageChecks(r);
  if (storage) out.push('', storage);
  const lbs = renderLbChecks(r);
  if (lbs) out.push('', lbs);
  const bad = r.cells.filter((c) => !c.ok);
  const badPmtu = (r.pmtu ?? []).filter((p) => !p.ok);
  const badStorage = (r.storage ?? []).filter((c) => !c.ok);
  const badLb = lbMismatchLines(r);
  if (bad.length || badPmtu.length || badStorage.length || badLb.length) {
    out.push(
      '',
      'Mismatches:',
      ...bad.map(
        (c) =>
          `  ${c.from} -> ${c.to}${c.kind === 'port' ? ` ${c.protocol}/${c.port}` : ''} (${c.kind}): expected ${expectedText(c.expected)}, measured ${c.observed ? 'reachable' : 'unreachable'} (${c.detail})${c.rule ? ` [${c.rule}]` : ''}`,
      ),
      ...badPmtu.map(
        (p) =>
          `  ${p.from} -> ${p.to} (path MTU on ${p.network}): expected ${p.expectedMtu}, measured ${p.measuredMtu ?? 'nothing'} (${p.detail})`,
      ),
      ...badStorage.map(
        (c) => `  storage ${STORAGE_CHECK_NAMES[c.check]} ${c.volume} (${c.target}): ${c.detail}`,
      ),
      ...badLb,
    );
  }
  const nStorage = r.storage?.length ?? 0;
  const nLb = r.loadBalancers?.length ?? 0;
  const checks = r.cells.length + (r.pmtu?.length ?? 0) + nStorage + nLb;
  const extra = [
    ...(r.pmtu?.length ? [`${r.pmtu.length} path-MTU checks`] : []),
    ...(nStorage ? [`${nStorage} storage checks`] : []),
    ...(nLb ? [`${nLb} load-balancer checks`] : []),
  ];
  const what = extra.length
    ? `${r.cells.length} cells and ${extra.join(' and ')}`
    : `${r.cells.length} cells`;
  out.push(
    '',
    r.ok
      ? `Verified: all ${what} match the topology (${(r.durationMs / 1000).toFixed(1)} s).`
      : `NOT verified: ${r.mismatches} of ${checks} ${extra.length ? 'checks' : 'cells'} differ from the topology.`,
  );
  return out.join('\n');
}
