// Interface counters from one `ip -json -stats link show` (the kernel's 64-bit statistics of every link in a
// namespace): what the metrics of a host, its networks' bridges and its VMs' taps are read from.
import { z } from 'zod';
import type { Runner } from './runner.js';

/** Counters of one link as the kernel keeps them (`stats64`). */
export interface LinkCounters {
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  rxDropped: number;
  txDropped: number;
  rxErrors: number;
  txErrors: number;
}

/** Most bytes of `ip -json -stats link show` read (about 600 per link: some 14,000 links). */
export const LINK_STATS_OUTPUT_MAX_BYTES = 8 * 1024 * 1024;

const count = z.number().int().nonnegative().finite();
const Direction = z.object({ bytes: count, packets: count, errors: count, dropped: count });
// Only what is read is checked; iproute2 adds fields between versions.
const LinkStats = z.object({
  ifname: z.string().regex(/^[A-Za-z0-9_.@:-]{1,15}$/),
  stats64: z.object({ rx: Direction, tx: Direction }),
});

/**
 * Parses `ip -json -stats link show`: counters by link name, in the kernel's order, at most `max` links (the rest
 * is ignored). A link without statistics or with a malformed entry is left out, not guessed.
 */
export function parseLinkStats(text: string, max: number): Map<string, LinkCounters> {
  const out = new Map<string, LinkCounters>();
  const t = text.trim();
  if (t === '') return out;
  const all: unknown = JSON.parse(t);
  if (!Array.isArray(all)) throw new Error('ip -json -stats link show: expected an array');
  for (const entry of all) {
    if (out.size >= max) break;
    const r = LinkStats.safeParse(entry);
    if (!r.success) continue;
    const { rx, tx } = r.data.stats64;
    out.set(r.data.ifname, {
      rxBytes: rx.bytes,
      txBytes: tx.bytes,
      rxPackets: rx.packets,
      txPackets: tx.packets,
      rxDropped: rx.dropped,
      txDropped: tx.dropped,
      rxErrors: rx.errors,
      txErrors: tx.errors,
    });
  }
  return out;
}

/** Every link's counters in `netns` (undefined: the caller's own namespace), at most `max` links. */
export async function linkStats(
  runner: Runner,
  max: number,
  netns?: string,
): Promise<Map<string, LinkCounters>> {
  const r = await runner.run(['ip', '-json', '-stats', 'link', 'show'], {
    ...(netns ? { netns } : {}),
    maxOutputBytes: LINK_STATS_OUTPUT_MAX_BYTES,
  });
  return parseLinkStats(r.stdout, max);
}

/** A tap's counters as its guest sees them: what the host side sent, the guest received, and the other way. */
export function guestView(tap: LinkCounters): LinkCounters {
  return {
    rxBytes: tap.txBytes,
    txBytes: tap.rxBytes,
    rxPackets: tap.txPackets,
    txPackets: tap.rxPackets,
    rxDropped: tap.txDropped,
    txDropped: tap.rxDropped,
    rxErrors: tap.txErrors,
    txErrors: tap.rxErrors,
  };
}
