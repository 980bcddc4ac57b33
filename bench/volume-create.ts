// Volume creation in a dir pool: an empty thin template plus a linked clone of it, as vmlink's DirPool makes them
// (build under a temporary name, link into place, checks of the clone's backing chain before qemu-img opens it) vs
// the two raw `qemu-img create` commands reaching the same files. Side by side in one run, order flipped each repeat.
// No namespaces, devices or guests: only files under a temp dir, removed at the end (also on Ctrl-C).
//   npx tsx bench/volume-create.ts [--repeat N]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DirPool } from '../src/drivers/storage/dir-pool.js';
import { type RunOptions, SystemRunner } from '../src/exec/runner.js';
import type { PoolConfig } from '../src/shared/storage.js';
import { hostInfo, median, onCleanup, round } from './lib.js';

const repeat = Number(process.argv[process.argv.indexOf('--repeat') + 1]) || 9;
const SIZE_MIB = 1024;

/** A real runner that counts the commands vmlink runs and what each kind costs. */
class CountingRunner extends SystemRunner {
  readonly counts = new Map<string, { n: number; ms: number }>();
  override async run(argv: readonly string[], opts: RunOptions = {}) {
    const t0 = performance.now();
    try {
      return await super.run(argv, opts);
    } finally {
      const k = argv.slice(0, 2).join(' ');
      const c = this.counts.get(k) ?? { n: 0, ms: 0 };
      this.counts.set(k, { n: c.n + 1, ms: c.ms + performance.now() - t0 });
    }
  }
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'vmlink-bench-volcreate-'));
  const cleanup = onCleanup(`temp dir ${root}`, () => rm(root, { recursive: true, force: true }));
  try {
    const runner = new CountingRunner();
    const pool: PoolConfig = { name: 'bench', type: 'dir', path: join(root, 'pool') };
    const dirPool = new DirPool({ runner, stateDir: join(root, 'state') });
    await dirPool.ensurePool(pool, 'bench001');
    const raw = new SystemRunner();
    const rawDir = join(root, 'raw');
    await raw.run(['mkdir', '-m', '0700', rawDir]);

    const vmlinkSide = async (i: number) => {
      const t0 = performance.now();
      await dirPool.createVolume(pool, {
        pool: 'bench',
        name: `tmpl-${i}`,
        sizeMiB: SIZE_MIB,
        format: 'qcow2',
      });
      await dirPool.createVolume(pool, {
        pool: 'bench',
        name: `clone-${i}`,
        sizeMiB: SIZE_MIB,
        format: 'qcow2',
        from: { volume: `tmpl-${i}`, linked: true },
      });
      return performance.now() - t0;
    };
    const rawSide = async (i: number) => {
      const t0 = performance.now();
      await raw.run([
        'qemu-img',
        'create',
        '-q',
        '-f',
        'qcow2',
        join(rawDir, `tmpl-${i}.qcow2`),
        `${SIZE_MIB}M`,
      ]);
      await raw.run([
        'qemu-img',
        'create',
        '-q',
        '-f',
        'qcow2',
        '-F',
        'qcow2',
        '-b',
        `tmpl-${i}.qcow2`,
        join(rawDir, `clone-${i}.qcow2`),
      ]);
      return performance.now() - t0;
    };

    // One untimed round each: page cache and the binaries warm.
    await vmlinkSide(0);
    await rawSide(0);
    runner.counts.clear();
    const vm: number[] = [];
    const rw: number[] = [];
    for (let i = 1; i <= repeat; i++) {
      if (i % 2) {
        vm.push(await vmlinkSide(i));
        rw.push(await rawSide(i));
      } else {
        rw.push(await rawSide(i));
        vm.push(await vmlinkSide(i));
      }
    }
    const h = hostInfo();
    console.log(`volume create + linked clone in a dir pool (${SIZE_MIB} MiB thin qcow2), ${repeat} repeats`);
    console.log(`  machine: ${h.cpuModel}, ${h.cores} cores, kernel ${h.kernel}, ${h.qemu}`);
    console.log(
      `  vmlink DirPool: ${vm.map((x) => round(x, 1)).join(', ')} ms (median ${round(median(vm), 1)} ms)`,
    );
    console.log(
      `  raw qemu-img:   ${rw.map((x) => round(x, 1)).join(', ')} ms (median ${round(median(rw), 1)} ms)`,
    );
    console.log(`  ratio vmlink / raw: ${round(median(vm) / median(rw), 2)}`);
    console.log('  commands vmlink ran per repeat (count, mean ms):');
    for (const [k, c] of runner.counts)
      console.log(`    ${k.padEnd(16)} ${round(c.n / repeat, 1)}x  ${round(c.ms / c.n, 1)} ms`);
  } finally {
    await cleanup();
  }
}

await main();
