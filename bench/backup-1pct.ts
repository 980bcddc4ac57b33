// Issue 12's 1 % round alone, repeated: after one full backup by each tool, N times twenty 1 MiB writes at random
// offsets (the same on the qcow2 and the raw image), then restic's incremental of the raw image and vmlink's of the
// qcow2 (bench/backup.ts's classes: a stopped VM's view through the spare storage daemon, the agent's pipeline, a
// local store), restic first as in backup.ts's 1 % round. Prints each pair, its ratio, and the medians: backup.ts
// times that round once, so one noisy moment decides its ratio; this shows its spread on the same machine.
//   flock /tmp/vmlink-bench.lock npx tsx bench/backup-1pct.ts [--size 2G] [--rounds 5]
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { applyChange, changesFor, makeImage } from './backup-image.js';
import { Restic, reexecWithAgentMalloc } from './backup-tools.js';
import { Vmlink } from './backup-vmlink.js';

const MiB = 1024 * 1024;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const load = () => loadavg()[0]!.toFixed(2);

async function main(): Promise<void> {
  reexecWithAgentMalloc();
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '2G' },
      rounds: { type: 'string', default: '5' },
      'glibc-defaults': { type: 'boolean', default: false },
    },
  });
  const m = /^(\d+)([MG])$/.exec(values.size);
  const size = m ? Number(m[1]) * (m[2] === 'G' ? 1024 : 1) * MiB : Number.NaN;
  if (!Number.isSafeInteger(size) || size % (4 * MiB) !== 0) throw new Error('--size: e.g. 512M or 2G');
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds: a positive integer');
  const change = changesFor(size).find((c) => c.name === '1%' && !c.cold)!;
  const dir = mkdtempSync('/tmp/vmlink-bench-backup-1pct-');
  chmodSync(dir, 0o700);
  const vmlink = new Vmlink(join(dir, 'v'), join(dir, 'disk.qcow2'), size);
  try {
    const raw = join(dir, 'disk.raw');
    makeImage(raw, join(dir, 'disk.qcow2'), size);
    const restic = new Restic(dir, raw);
    await vmlink.init();
    await restic.init();
    console.log(
      `start ${new Date().toISOString()} load ${load()}; ${size / MiB} MiB image, ${rounds} rounds`,
    );
    const full = [await restic.backup('full'), await vmlink.backup('full')];
    console.log(
      `full: restic ${(full[0]!.ms / 1000).toFixed(2)} s, vmlink ${(full[1]!.ms / 1000).toFixed(2)} s`,
    );
    const pairs: Array<{ restic: number; vmlink: number }> = [];
    for (let r = 1; r <= rounds; r++) {
      applyChange(dir, { qcow2: join(dir, 'disk.qcow2'), raw }, change, 5000 + r, size);
      execFileSync('sync');
      const a = await restic.backup('1%');
      const b = await vmlink.backup('1%');
      pairs.push({ restic: a.ms, vmlink: b.ms });
      console.log(
        `1% #${r}: restic ${(a.ms / 1000).toFixed(2)} s, vmlink ${(b.ms / 1000).toFixed(2)} s (${b.note}): ${(a.ms / b.ms).toFixed(1)}x, load ${load()}`,
      );
    }
    const mr = median(pairs.map((p) => p.restic));
    const mv = median(pairs.map((p) => p.vmlink));
    const ratios = pairs.map((p) => p.restic / p.vmlink);
    console.log(
      `medians: restic ${(mr / 1000).toFixed(2)} s, vmlink ${(mv / 1000).toFixed(2)} s: ${(mr / mv).toFixed(1)}x; ratios ${ratios.map((x) => x.toFixed(1)).join(', ')} (${ratios.filter((x) => x >= 10).length} of ${rounds} at 10x or more)`,
    );
    console.log(`end ${new Date().toISOString()} load ${load()}`);
  } finally {
    await vmlink.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? String(e));
  process.exit(1);
});
