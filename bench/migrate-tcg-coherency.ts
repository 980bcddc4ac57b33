// Does a TCG live migration carry every page the guest wrote? test/helpers/tcg-coherency.ts migrates the test guest
// between two plain QEMUs while it writes and compares both RAMs page by page. QEMU before 9.0 lacks commit
// 03bfc2188f ("physmem: Fix migration dirty bitmap coherency with TCG memory access"): its fast dirty-bitmap sync,
// taken when a RAM block's length is a multiple of 64 pages, leaves TCG's TLB entries writable without dirty
// tracking, so stores after a sync can be lost. Rows per RAM size, alternating: `aligned` (-m 256M, the fast path)
// and `padded` (the -m vmlink gives a TCG guest, src/drivers/hypervisor/qemu/tcg-ram.ts: QEMU's per-page path).
//   npx tsx bench/migrate-tcg-coherency.ts [--runs 5] [--mib 256] [--downtime 300] [--only aligned|padded]  (root; ~1 min a run)
import { memoryArg } from '../src/drivers/hypervisor/qemu/tcg-ram.js';
import { type CoherencyResult, migrateAndCompare } from '../test/helpers/tcg-coherency.js';

const argValue = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
};
const runs = Math.max(1, Math.min(50, Number(argValue('--runs')) || 5));
const mib = Math.max(128, Math.min(2048, Number(argValue('--mib')) || 256));
const downtimeMs = Math.max(10, Math.min(10_000, Number(argValue('--downtime')) || 300));
const only = argValue('--only');

const VARIANTS: Record<string, string> = { aligned: `${mib}M`, padded: memoryArg(mib, 'tcg', false) };

async function main(): Promise<void> {
  const variants = only ? only.split(',') : Object.keys(VARIANTS);
  const all: Array<CoherencyResult & { variant: string }> = [];
  for (let k = 0; k < runs; k++)
    for (const v of variants) {
      const r = { ...(await migrateAndCompare(VARIANTS[v]!, downtimeMs)), variant: v };
      all.push(r);
      console.log(
        `run ${k + 1}/${runs} ${v} (-m ${VARIANTS[v]}): ${r.differingPages} page(s) differ${r.firstDiffs.length ? ` (first at ${r.firstDiffs.join(', ')})` : ''}; QEMU downtime ${r.qemuDowntimeMs} ms, ${r.syncs} dirty syncs, total ${r.totalMs} ms`,
      );
    }
  for (const v of variants) {
    const rs = all.filter((r) => r.variant === v);
    console.log(
      `${v}: ${rs.filter((r) => r.differingPages > 0).length} of ${rs.length} migrations lost writes (pages differing: ${rs.map((r) => r.differingPages).join(', ')})`,
    );
  }
}

await main();
