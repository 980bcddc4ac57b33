import { describe, expect, it } from 'vitest';
import {
  cellStatus,
  cellsByPair,
  describeCell,
  hostLinkKey,
  linkStatuses,
  orderedEndpoints,
  vmLinkKey,
  worst,
} from './matrix.js';
import type { MatrixCell, VerifyResult } from './types.js';

const cell = (from: string, to: string, ok: boolean, extra: Partial<MatrixCell> = {}): MatrixCell => ({
  from,
  to,
  kind: 'ping',
  expected: true,
  observed: ok,
  detail: '',
  ok,
  ...extra,
});

const verify = (cells: MatrixCell[]): VerifyResult => ({
  endpoints: [
    { id: 'h1', kind: 'host', host: 'h1' },
    { id: 'h2', kind: 'host', host: 'h2' },
    { id: 'a', kind: 'vm', host: 'h1', network: 'lan' },
    { id: 'b/lan', kind: 'vm', host: 'h2', network: 'lan' },
    { id: 'b/dmz', kind: 'vm', host: 'h2', network: 'dmz' },
    { id: 'upstream', kind: 'upstream' },
  ],
  cells,
  ok: cells.every((c) => c.ok),
  mismatches: cells.filter((c) => !c.ok).length,
  measuredAt: '2026-12-01T00:00:00Z',
  durationMs: 1,
});

describe('matrix statuses', () => {
  it('ranks a mismatch over not measured over ok', () => {
    expect(cellStatus({ ok: true })).toBe('ok');
    expect(cellStatus({ ok: false })).toBe('mismatch');
    expect(cellStatus({ ok: true, unmeasured: true })).toBe('unmeasured');
    expect(worst([])).toBe('none');
    expect(worst(['ok', 'unmeasured', 'ok'])).toBe('unmeasured');
    expect(worst(['ok', 'mismatch', 'unmeasured'])).toBe('mismatch');
  });

  it('groups cells by ordered pair', () => {
    const pairs = cellsByPair([
      cell('a', 'b/lan', true),
      cell('a', 'b/lan', false, { kind: 'port', port: 80 }),
    ]);
    expect(pairs.get('a\u0000b/lan')).toHaveLength(2);
    expect(pairs.get('b/lan\u0000a')).toBeUndefined();
  });

  it('describes a cell in words', () => {
    expect(describeCell(cell('a', 'b/lan', false, { kind: 'port', port: 22, detail: 'timeout' }))).toBe(
      'a -> b/lan tcp/22: expected reachable, observed blocked — timeout',
    );
  });
});

describe('link colours', () => {
  it('colours a VM link by the cells of its endpoint, by VM name for multi-NIC ids', () => {
    const links = linkStatuses(verify([cell('a', 'b/lan', true), cell('b/dmz', 'upstream', false)]));
    expect(links.get(vmLinkKey('a', 'lan'))).toBe('ok');
    expect(links.get(vmLinkKey('b', 'lan'))).toBe('ok');
    expect(links.get(vmLinkKey('b', 'dmz'))).toBe('mismatch');
  });

  it('colours host links crossed by traffic between hosts, and the worst cell wins', () => {
    const links = linkStatuses(
      verify([cell('a', 'b/lan', true), cell('b/lan', 'a', false), cell('h1', 'a', true)]),
    );
    expect(links.get(hostLinkKey('h1', 'lan'))).toBe('mismatch');
    expect(links.get(hostLinkKey('h2', 'lan'))).toBe('mismatch');
    // A host reaching its own VM says something about its own attachment only.
    const own = linkStatuses(verify([cell('h1', 'a', true)]));
    expect(own.get(hostLinkKey('h1', 'lan'))).toBe('ok');
    expect(own.get(hostLinkKey('h2', 'lan'))).toBeUndefined();
  });

  it('has nothing to say without a verify', () => {
    expect(linkStatuses(undefined).size).toBe(0);
  });

  it('orders endpoints hosts first, then VMs, then the outside', () => {
    expect(orderedEndpoints(verify([])).map((e) => e.id)).toEqual([
      'h1',
      'h2',
      'a',
      'b/dmz',
      'b/lan',
      'upstream',
    ]);
  });
});
