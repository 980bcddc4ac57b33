// `vmlink status`: each host's TCP tuning as its agent observes it, and where the spec sets one, its drift.
import type { Status } from '../controller/wire.js';
import { describeTuning } from '../shared/tuning.js';

/** One line per host whose agent reports tuning; empty when none does. */
export function renderTuning(hosts: Status['hosts']): string[] {
  const lines: string[] = [];
  for (const h of hosts) {
    const t = h.report?.capabilities.tuning;
    if (!t) continue;
    const now = describeTuning(t.current).join(', ') || 'nothing readable';
    const drift = h.tuningDrift;
    const note =
      drift === undefined
        ? ''
        : drift.length
          ? ` (drift from the spec: ${drift.join(', ')})`
          : ' (as the spec says)';
    lines.push(`  ${h.name}: ${now}${note}`);
  }
  return lines.length ? ['Tuning:', ...lines] : [];
}
