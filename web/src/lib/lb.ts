// Verify's load-balancer checks as the matrix view lists them: one row per check with its status and words. Pure:
// unit-tested in lb.test.ts.
import { type CellStatus, cellStatus } from './matrix.js';
import type { LbCell } from './types.js';

const CHECK: Record<LbCell['check'], string> = {
  vip: 'VIP held once',
  host: 'LB host',
  reach: 'VIP reached',
  healthy: 'UP backends only',
  backend: 'backend',
};

/** One row of the view's load-balancer table. */
export interface LbRow {
  lb: string;
  check: string;
  from: string;
  to: string;
  status: CellStatus;
  /** The cell's words; a backend taken out says so first (ok, yet the operator should see it). */
  text: string;
}

/** The rows of the load-balancer table, in the order verify reports them. */
export function lbRows(cells: readonly LbCell[] | undefined): LbRow[] {
  return (cells ?? []).map((c) => ({
    lb: c.lb,
    check: CHECK[c.check] ?? c.check,
    from: c.from ?? '',
    to: c.to,
    status: cellStatus(c),
    text: `${c.takenOut ? 'TAKEN OUT — ' : ''}${c.detail}`,
  }));
}
