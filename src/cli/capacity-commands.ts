// `vmlink capacity`: per pool what is used and promised, and the projected need
// (data × 1.5 + backup × 2 + reserve × 0.3), flagged above the warning ratio.
import type { Command } from 'commander';
import { type CapacityReport, CapacityReportSchema } from '../controller/wire-storage.js';
import { CAPACITY_WARN_RATIO } from '../shared/storage.js';
import { type Api, emit } from './io.js';
import { table } from './render.js';
import { formatMiB } from './volume-commands.js';

/** The capacity report for people: one row per pool, then each warning. */
export function renderCapacity(r: CapacityReport): string {
  if (!r.pools.length) return 'no pools (declare them under pools: in the spec and apply)';
  const rows = table(
    [
      'POOL',
      'TYPE',
      'HOST',
      'CAPACITY',
      'USED',
      'FREE',
      'PROVISIONED',
      'BACKUP',
      'RESERVE',
      'NEED',
      'STATUS',
    ],
    r.pools.map((p) => [
      p.pool,
      p.type,
      p.host,
      formatMiB(p.capacityMiB),
      p.usedMiB === undefined
        ? undefined
        : `${formatMiB(p.usedMiB)}${p.usedRatio === undefined ? '' : ` (${Math.round(p.usedRatio * 100)} %)`}`,
      formatMiB(p.freeMiB),
      `${formatMiB(p.provisionedMiB)}${p.overcommit === undefined ? '' : ` (${p.overcommit}×)`}`,
      formatMiB(p.backupMiB),
      formatMiB(p.reserveMiB),
      formatMiB(p.projectedNeedMiB),
      p.error ? 'unknown' : p.warnings.length ? 'WARN' : 'ok',
    ]),
  );
  const notes = r.pools.flatMap((p) => [
    ...p.warnings.map((w) => `warning: pool ${p.pool}: ${w}`),
    ...(p.error ? [`pool ${p.pool}: ${p.error}`] : []),
  ]);
  return [rows, '', 'NEED = provisioned × 1.5 + backup × 2 + reserve × 0.3', ...notes].join('\n');
}

/** `vmlink capacity`. */
export function addCapacityCommand(program: Command, api: Api): void {
  program
    .command('capacity')
    .description(
      `per pool: capacity, used, free, provisioned, backup copies, reserve and the projected need; warns above ${Math.round(CAPACITY_WARN_RATIO * 100)} % used`,
    )
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api().get('/v1/capacity', CapacityReportSchema);
      emit(!!o.json, r, () => renderCapacity(r));
    });
}
