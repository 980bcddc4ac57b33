// `vmlink balance --plan|--apply [--json]`: the live migrations that bring host CPU and memory use back within
// `cluster.balanceThreshold`, shown as a plan or run.
import type { Command } from 'commander';
import { formatBalancePlan } from '../controller/balance/format.js';
import {
  type BalanceApplyAnswer,
  BalanceApplyAnswerSchema,
  BalancePlanViewSchema,
} from '../controller/wire-balance.js';
import { VmlinkError } from '../shared/errors.js';
import { type Api, emit } from './io.js';

/** Longest an apply may take: each move is a live migration (a big guest takes minutes). */
const APPLY_TIMEOUT_MS = 60 * 60_000;

/** What `--apply` ran, move by move. */
export function renderBalanceApply(a: BalanceApplyAnswer): string {
  const lines = [formatBalancePlan(a.plan).trimEnd()];
  if (!a.plan.moves.length) return lines.join('\n');
  lines.push('', 'applied:');
  for (const r of a.results) {
    const took = r.totalMs !== undefined ? ` in ${(r.totalMs / 1000).toFixed(1)} s` : '';
    const down = r.downtimeMs !== undefined ? `, downtime ${r.downtimeMs} ms` : '';
    lines.push(
      `  ${r.ok ? 'ok    ' : 'FAILED'} ${r.vm} ${r.from} -> ${r.to}${took}${down}${r.error ? `: ${r.error}` : ''}`,
    );
  }
  const skipped = a.plan.moves.length - a.results.length;
  if (skipped > 0) lines.push(`  ${skipped} move(s) not started after the failure; run --plan again`);
  return lines.join('\n');
}

/** `vmlink balance`. */
export function addBalanceCommands(program: Command, api: Api): void {
  program
    .command('balance')
    .description(
      'DRS-style balancing: live migrations that bring host CPU and memory spreads within cluster.balanceThreshold (10 points by default); pinned VMs, ha.hosts and ha.group are respected',
    )
    .option('--plan', 'show the moves and why, change nothing (the default)')
    .option('--apply', 'plan, then run the moves as live migrations, in order, stopping at the first failure')
    .option('--json', 'machine-readable output')
    .action(async (o: { plan?: boolean; apply?: boolean; json?: boolean }) => {
      if (o.plan && o.apply) throw new VmlinkError('invalid', 'give --plan or --apply, not both');
      if (o.apply) {
        const a = await api().post('/v1/balance/apply', {}, BalanceApplyAnswerSchema, APPLY_TIMEOUT_MS);
        emit(!!o.json, a, () => renderBalanceApply(a));
        if (a.results.some((r) => !r.ok)) process.exitCode = 1;
        return;
      }
      const p = await api().get('/v1/balance', BalancePlanViewSchema);
      emit(
        !!o.json,
        p,
        () => `${formatBalancePlan(p).trimEnd()}\nmode: ${p.mode}; planned in ${p.planMs} ms`,
      );
    });
}
