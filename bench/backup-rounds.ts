// vmlink's backup side alone (bench/backup-vmlink.ts's Vmlink) over a few rounds of 1 % changes, each printed with
// its phases: the driver to profile it under (`node --cpu-prof --import tsx bench/backup-rounds.ts`).
//   npx tsx bench/backup-rounds.ts [--size 2048M] [--rounds 3] [--dir /tmp]
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { applyChange, makeImage } from './backup-image.js';
import { cpuMs } from './backup-tools.js';
import { Vmlink } from './backup-vmlink.js';
import { sleep } from './lib.js';

const MiB = 1024 * 1024;

/** Minor page faults of this process so far (all threads): touching fresh memory, the cost this bench hunts. */
function minorFaults(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '2048M' },
      rounds: { type: 'string', default: '3' },
      dir: { type: 'string', default: '/tmp' },
      wait: { type: 'string' },
    },
  });
  const size = Number(/^(\d+)M$/.exec(values.size)?.[1] ?? Number.NaN) * MiB;
  if (!Number.isSafeInteger(size) || size % (4 * MiB) !== 0) throw new Error('--size: e.g. 512M');
  const dir = mkdtempSync(join(values.dir, 'vmlink-bench-backup-rounds-'));
  chmodSync(dir, 0o700);
  // Closed whatever happens: its spare storage daemon outlives a process that exits without it.
  let tool: Vmlink | undefined;
  try {
    const images = { raw: join(dir, 'disk.raw'), qcow2: join(dir, 'disk.qcow2') };
    makeImage(images.raw, images.qcow2, size);
    tool = new Vmlink(join(dir, 'v'), images.qcow2, size);
    await tool.init();
    let sum = { ms: 0, cpu: 0 };
    for (let r = 0; r <= Number(values.rounds); r++) {
      if (r > 0) {
        const change = { name: '1%', count: Math.max(1, Math.round(size / 100 / MiB)), bytes: MiB };
        applyChange(dir, images, change, 2000 + r, size);
      }
      // A profiler attached from outside (perf record -p) starts here: `--wait FILE` waits for FILE to exist.
      if (r === 1 && values.wait) {
        console.log(`pid ${process.pid} waits for ${values.wait}`);
        while (!existsSync(values.wait)) await sleep(100);
      }
      const c0 = cpuMs();
      const f0 = minorFaults();
      const f = await tool.backup(r === 0 ? 'full' : '1%');
      const cpu = cpuMs() - c0;
      const faults = minorFaults() - f0;
      if (r > 0) sum = { ms: sum.ms + f.ms, cpu: sum.cpu + cpu };
      console.log(
        `${r === 0 ? 'full' : `1% #${r}`}  ${(f.ms / 1000).toFixed(2)} s (cpu ${(cpu / 1000).toFixed(2)} s)  read ${(f.readBytes / MiB).toFixed(0)} MiB  ${faults} page faults  (${f.note})`,
      );
    }
    // What glibc keeps (GLIBC_TUNABLES: src/shared/limits.ts AGENT_GLIBC_TUNABLES) shows in the resident size.
    const status = readFileSync('/proc/self/status', 'utf8');
    const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    console.log(
      `1% rounds summed: ${(sum.ms / 1000).toFixed(2)} s (cpu ${(sum.cpu / 1000).toFixed(2)} s); RSS ${Math.round(kib('VmRSS') / 1024)} MiB, peak ${Math.round(kib('VmHWM') / 1024)} MiB`,
    );
  } finally {
    await tool?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? String(e));
  process.exit(1);
});
