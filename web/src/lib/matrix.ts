// The verify matrix as the views show it: each cell's status, the cells grouped by endpoint pair, and the colour of
// each topology link (the worst status of the cells measured across it). Pure: unit-tested in matrix.test.ts.
import type { Endpoint, MatrixCell, VerifyResult } from './types.js';

/** How a cell (or a group of cells) came out; `none`: nothing measured there. */
export type CellStatus = 'ok' | 'mismatch' | 'unmeasured' | 'none';

/** Worse statuses first: a link with one mismatch is a mismatch. */
const RANK: Record<CellStatus, number> = { mismatch: 3, unmeasured: 2, ok: 1, none: 0 };

/** The status of one measured cell. */
export function cellStatus(c: Pick<MatrixCell, 'ok' | 'unmeasured'>): CellStatus {
  if (c.unmeasured) return 'unmeasured';
  return c.ok ? 'ok' : 'mismatch';
}

/** The worse of the statuses (none for an empty list). */
export function worst(statuses: Iterable<CellStatus>): CellStatus {
  let w: CellStatus = 'none';
  for (const s of statuses) if (RANK[s] > RANK[w]) w = s;
  return w;
}

/** The CSS class of a status (colours in app.css; the text beside it says the same for colour-blind readers). */
export const statusClass = (s: CellStatus): string => `st-${s}`;

/** A short text for a status, shown beside its colour. */
export const statusText: Record<CellStatus, string> = {
  ok: 'as expected',
  mismatch: 'NOT as expected',
  unmeasured: 'not measured',
  none: 'no verify data',
};

/** The cells of each (from, to) pair, keyed `from\u0000to`. */
export function cellsByPair(cells: readonly MatrixCell[]): Map<string, MatrixCell[]> {
  const m = new Map<string, MatrixCell[]>();
  for (const c of cells) {
    const k = `${c.from}\u0000${c.to}`;
    const list = m.get(k);
    if (list) list.push(c);
    else m.set(k, [c]);
  }
  return m;
}

/** A one-line description of a cell for a tooltip or a list. */
export function describeCell(c: MatrixCell): string {
  const what = c.kind === 'port' ? `tcp/${c.port ?? '?'}` : c.kind;
  const expected = c.expected === 'any' ? 'either' : c.expected ? 'reachable' : 'blocked';
  const observed = c.unmeasured ? 'not measured' : c.observed ? 'reachable' : 'blocked';
  const rtt = c.rttMs === undefined ? '' : ` (${c.rttMs.toFixed(1)} ms)`;
  return `${c.from} -> ${c.to} ${what}: expected ${expected}, observed ${observed}${rtt}${c.detail ? ` — ${c.detail}` : ''}`;
}

/** Key of a topology link: a VM's NIC on a network, or a host's attachment to a network. */
export const vmLinkKey = (vm: string, network: string): string => `vm:${vm}\u0000${network}`;
export const hostLinkKey = (host: string, network: string): string => `host:${host}\u0000${network}`;

/** The VM name of a VM endpoint: verify ids VM endpoints by VM (and NIC); `nic`/`network` say which NIC. */
function vmOf(e: Endpoint): string | undefined {
  if (e.kind !== 'vm') return undefined;
  // Endpoint ids of VMs are `vm` or `vm/nic`-like; the part before a separator is the VM's name.
  return e.id.split(/[/:@]/)[0];
}

/**
 * The colour of every link the matrix says something about:
 * - a VM's link to a network: the cells from or to that VM's endpoint on that network;
 * - a host's link to a network: the cells between that host's endpoint and the VM endpoints on that network, and
 *   between those VM endpoints and VM endpoints on other hosts (the traffic that crosses the host's attachment).
 */
export function linkStatuses(v: VerifyResult | undefined): Map<string, CellStatus> {
  const out = new Map<string, CellStatus>();
  if (!v) return out;
  const byId = new Map(v.endpoints.map((e) => [e.id, e]));
  const add = (key: string, s: CellStatus) => out.set(key, worst([out.get(key) ?? 'none', s]));
  for (const c of v.cells) {
    const s = cellStatus(c);
    const from = byId.get(c.from);
    const to = byId.get(c.to);
    for (const [e, other] of [
      [from, to],
      [to, from],
    ] as const) {
      if (e?.kind !== 'vm' || !e.network) continue;
      const vm = vmOf(e);
      if (vm) add(vmLinkKey(vm, e.network), s);
      if (!e.host || !other) continue;
      // Traffic between this VM and another host (its endpoint, or a VM there) crosses both hosts' attachments.
      if (other.host && other.host !== e.host) {
        add(hostLinkKey(e.host, e.network), s);
        if (other.kind === 'vm' && other.network) add(hostLinkKey(other.host, other.network), s);
      }
      if (other.kind === 'host' && other.host === e.host) add(hostLinkKey(e.host, e.network), s);
    }
  }
  return out;
}

/** The endpoints in the matrix's order: hosts, VMs, then peers and upstream; by id within a kind. */
export function orderedEndpoints(v: VerifyResult): Endpoint[] {
  const order = { host: 0, vm: 1, peer: 2, upstream: 3 } as const;
  return [...v.endpoints].sort((a, b) => order[a.kind] - order[b.kind] || a.id.localeCompare(b.id));
}
