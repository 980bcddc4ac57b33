// The migration explain as text (`vmlink vm migrate --explain`).
import type { z } from 'zod';
import type { MigrationExplainSchema } from '../controller/wire-migrate.js';

type MigrationExplain = z.infer<typeof MigrationExplainSchema>;

/** The explain as text, one line per check (`✗` blocks, `!` warns, `✓` passed), fixes indented. */
export function renderExplain(e: MigrationExplain): string {
  const lines = [
    `migrate vm ${e.vm}: ${e.from} -> ${e.to}: ${e.ok ? 'possible' : 'blocked'}${e.blockMigration ? ' (block migration of local disks)' : ''}`,
  ];
  for (const c of e.checks) {
    const mark = c.ok ? '✓' : c.severity === 'blocker' ? '✗' : '!';
    lines.push(`  ${mark} ${c.message}`);
    if (c.fix && !c.ok) lines.push(`      fix: ${c.fix}`);
  }
  return lines.join('\n');
}
