// Before/after of vmlink's backup side alone (bench/backup.ts's Vmlink), side by side in one process: the Vmlink of
// another checkout (e.g. main) and this one's, each on its own copy of one qcow2 image, the same changes applied to
// both, the order turning every round. Prints wall and CPU time (this process, all threads) per round and side.
// `--change 4k-scattered`: each round's change is the 1 % as 4 KiB writes scattered over the disk (the worst case for
// fixed chunks) instead of twenty 1 MiB writes per 2 GiB. `--chunks 4096K,1024K` instead of `--other`: both sides are
// this checkout's, cutting new chains at those chunk sizes (`other` the first, `this` the second). `--upkeep`: then
// each side's restore, GC and checksum verify. `--spare` instead of `--other`: both sides are this checkout's, `other`
// starting a storage daemon per round, `this` taking the spare one (the agent's way).
//   npx tsx bench/backup-ab.ts --other /work/main [--size 512M] [--rounds 3] [--change 1%|4k-scattered]
//   npx tsx bench/backup-ab.ts --spare [--size 512M] [--rounds 3] [--change 1%|4k-scattered]
//   npx tsx bench/backup-ab.ts --chunks 4096K,1024K [--size 512M] [--rounds 3] [--change 1%|4k-scattered]
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { isChunkSize } from '../src/shared/backup.js';
import { applyChange, changesFor, makeImage } from './backup-image.js';
import { type BackupTool, cpuMs } from './backup-tools.js';
import type { Vmlink } from './backup-vmlink.js';

type Upkeep = Pick<Vmlink, 'upkeep'>;

const MiB = 1024 * 1024;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      other: { type: 'string' },
      chunks: { type: 'string' },
      size: { type: 'string', default: '512M' },
      rounds: { type: 'string', default: '3' },
      change: { type: 'string', default: '1%' },
      upkeep: { type: 'boolean', default: false },
      spare: { type: 'boolean', default: false },
    },
  });
  const kib = (v: string) => Number(/^(\d+)K$/.exec(v)?.[1] ?? Number.NaN) * 1024;
  const chunkSizes = values.chunks?.split(',').map(kib);
  if (chunkSizes && (chunkSizes.length !== 2 || !chunkSizes.every(isChunkSize)))
    throw new Error('--chunks: two chunk sizes, e.g. 4096K,1024K');
  if ([values.other !== undefined, chunkSizes !== undefined, values.spare].filter(Boolean).length !== 1)
    throw new Error('--other DIR (the checkout to compare with), --chunks A,B or --spare');
  const size = Number(/^(\d+)M$/.exec(values.size)?.[1] ?? Number.NaN) * MiB;
  if (!Number.isSafeInteger(size) || size % (4 * MiB) !== 0) throw new Error('--size: e.g. 512M');
  const change = changesFor(size).find((c) => c.name === values.change && !c.cold);
  if (!change || change.name === '10%') throw new Error('--change: 1% or 4k-scattered');
  const dir = mkdtempSync('/tmp/vmlink-bench-backup-ab-');
  chmodSync(dir, 0o700);
  // Closed whatever happens: a side's spare storage daemon outlives a process that exits without it.
  let sides: Array<[string, BackupTool]> = [];
  try {
    const raw = join(dir, 'disk.raw');
    const images = { other: join(dir, 'other.qcow2'), this: join(dir, 'this.qcow2') };
    makeImage(raw, images.other, size);
    execFileSync('cp', ['--sparse=always', images.other, images.this]);
    const This = (await import('./backup-vmlink.js')).Vmlink;
    const Other = values.other ? (await import(join(values.other, 'bench/backup-vmlink.ts'))).Vmlink : This;
    sides = [
      [
        'other',
        values.spare
          ? new This(join(dir, 'o'), images.other, size, undefined, false)
          : new Other(join(dir, 'o'), images.other, size, ...(chunkSizes ? [chunkSizes[0]] : [])),
      ],
      ['this', new This(join(dir, 't'), images.this, size, ...(chunkSizes ? [chunkSizes[1]] : []))],
    ];
    for (const [, t] of sides) await t.init();
    const totals: Record<string, { ms: number; cpu: number }> = {
      other: { ms: 0, cpu: 0 },
      this: { ms: 0, cpu: 0 },
    };
    for (let r = 0; r <= Number(values.rounds); r++) {
      if (r > 0) {
        for (const img of Object.values(images))
          applyChange(dir, { qcow2: img, raw }, change, 2000 + r, size);
      }
      const order = r % 2 === 0 ? sides : [...sides].reverse();
      for (const [name, t] of order) {
        const c0 = cpuMs();
        const f = await t.backup(r === 0 ? 'full' : change.name);
        const cpu = cpuMs() - c0;
        if (r > 0) {
          totals[name]!.ms += f.ms;
          totals[name]!.cpu += cpu;
        }
        console.log(
          `${r === 0 ? 'full' : `${change.name} #${r}`}  ${name.padEnd(5)} ${(f.ms / 1000).toFixed(2)} s (cpu ${(cpu / 1000).toFixed(2)} s)  read ${(f.readBytes / MiB).toFixed(0)} MiB  (${f.note})`,
        );
      }
    }
    const o = totals.other!;
    const t = totals.this!;
    console.log(
      `${change.name} rounds summed: other ${(o.ms / 1000).toFixed(2)} s (cpu ${(o.cpu / 1000).toFixed(2)} s), this ${(t.ms / 1000).toFixed(2)} s (cpu ${(t.cpu / 1000).toFixed(2)} s): other/this ${(o.ms / t.ms).toFixed(2)}x wall, ${(o.cpu / t.cpu).toFixed(2)}x cpu`,
    );
    if (values.upkeep) {
      // What the chunk size costs after the rounds: a restore of the newest snapshot, GC and a checksum verify of the
      // store (every chunk read), each side in turn.
      for (const [name, t] of sides) {
        const c0 = cpuMs();
        const r = await t.restore(join(dir, name.slice(0, 1)));
        const u = (t as Partial<Upkeep>).upkeep ? await (t as unknown as Upkeep).upkeep() : undefined;
        console.log(
          `upkeep ${name.padEnd(5)} restore ${(r.ms / 1000).toFixed(2)} s (${(size / MiB / (r.ms / 1000)).toFixed(0)} MiB/s)${u ? `, gc ${u.gcMs.toFixed(0)} ms, verify ${(u.verifyMs / 1000).toFixed(2)} s, ${u.chunks} chunks ${(u.storedBytes / MiB).toFixed(0)} MiB` : ''} (cpu ${((cpuMs() - c0) / 1000).toFixed(2)} s)`,
        );
      }
    }
  } finally {
    for (const [, s] of sides) await s.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? String(e));
  process.exit(1);
});
