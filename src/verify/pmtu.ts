// Path-MTU measurement as a pure search over a don't-fragment probe (the probe itself lives in the controller).
// The search never goes below MTU_MIN, the smallest MTU every IPv4 path must carry.
import { MTU_MIN } from '../shared/limits.js';

/** IPv4 header (20) + ICMP echo header (8): an MTU of M carries an echo payload of M - 28 bytes. */
export const ICMP_OVERHEAD = 28;

/** Outcome of a path-MTU search. */
export interface PmtuSearch {
  /** Largest MTU that passed; undefined when even `minMtu` failed (no path at all). */
  measuredMtu?: number;
  /** Payload sizes probed, in order. */
  probed: number[];
}

/**
 * Finds the largest MTU <= `mtu` whose don't-fragment echo passes. `probe(payload)` sends one echo with `payload`
 * data bytes and says whether the reply came. Tries the full MTU first (one probe when the path is right), then
 * the minimum, then bisects: about log2(mtu - min) probes.
 */
export async function searchPathMtu(
  probe: (payload: number) => Promise<boolean>,
  mtu: number,
  opts: { minMtu?: number } = {},
): Promise<PmtuSearch> {
  const probed: number[] = [];
  const tryMtu = async (m: number) => {
    probed.push(m - ICMP_OVERHEAD);
    return probe(m - ICMP_OVERHEAD);
  };
  if (await tryMtu(mtu)) return { measuredMtu: mtu, probed };
  const min = Math.min(opts.minMtu ?? MTU_MIN, mtu - 1);
  if (min <= ICMP_OVERHEAD || !(await tryMtu(min))) return { probed };
  // Invariant: lo passes, hi fails.
  let lo = min;
  let hi = mtu;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await tryMtu(mid)) lo = mid;
    else hi = mid;
  }
  return { measuredMtu: lo, probed };
}
