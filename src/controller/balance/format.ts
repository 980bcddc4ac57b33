// A balance plan in words, as `vmlink balance --plan` prints it and the golden plans hold it.
import type { BalancePlan } from './plan.js';

/** The plan as text: spreads before and after, each move with its reason, then the notes. */
export function formatBalancePlan(plan: BalancePlan): string {
  const lines: string[] = [];
  const s = (x: { cpu: number; memory: number }) =>
    `CPU spread ${x.cpu} points, memory spread ${x.memory} points`;
  lines.push(`before: ${s(plan.before.spread)} (threshold ${plan.thresholdPoints})`);
  for (const h of plan.before.hosts)
    lines.push(`  ${h.host}: CPU ${h.cpuPercent}%, memory ${h.memoryPercent}%`);
  if (plan.moves.length) lines.push(`moves (${plan.moves.length}, in order):`);
  plan.moves.forEach((m, i) => {
    lines.push(`  ${i + 1}. migrate ${m.vm} ${m.from} -> ${m.to}`);
    lines.push(`     why: ${m.reason}`);
  });
  lines.push(`after: ${s(plan.after.spread)}${plan.balanced ? ' (balanced)' : ' (NOT balanced)'}`);
  if (plan.moves.length)
    for (const h of plan.after.hosts)
      lines.push(`  ${h.host}: CPU ${h.cpuPercent}%, memory ${h.memoryPercent}%`);
  for (const n of plan.notes) lines.push(`note: ${n}`);
  return `${lines.join('\n')}\n`;
}
