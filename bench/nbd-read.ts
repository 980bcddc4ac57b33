// Read throughput of a qcow2 through vmlink's NBD client (drivers/backup/nbd-client.ts) from qemu-nbd, the way the
// backup pipeline reads a disk (4 MiB reads, 4 in flight), against `qemu-img convert` of the same image into QEMU's
// null driver (reads everything, writes nowhere): the fastest QEMU itself reads that image. Image: MiB of random
// data (incompressible, every cluster allocated) in a temp dir. Sides alternate first; page cache warm for both (the
// first, untimed pass reads the image once; dropping caches would disturb other users of the machine). qemu-nbd runs
// with the default host cache (writeback) and, as a third side, `--cache=none --aio=native` (O_DIRECT).
//   npx tsx bench/nbd-read.ts [--mib 1024] [--repeat 3] [--skip-direct]
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connectNbd } from '../src/drivers/backup/nbd-client.js';
import { type QemuNbdOptions, startQemuNbd } from '../src/drivers/backup/qemu-nbd.js';
import { SystemRunner } from '../src/exec/runner.js';
import { median, numArg, round } from './lib.js';

const MIB = numArg('--mib', 1024);
const REPEAT = numArg('--repeat', 3);
/** Leaves out the `--cache=none --aio=native` side (it measured no faster here). */
const SKIP_DIRECT = process.argv.includes('--skip-direct');
const CHUNK = 4 * 1024 * 1024;
const IN_FLIGHT = 4;
const runner = new SystemRunner();
/** CPU time (user + system) of this process during each read through vmlink's client, and of QEMU's client. */
const cpuMs: number[] = [];
const qemuCpuMs: number[] = [];

async function viaNbd(image: string, dir: string, extra: Partial<QemuNbdOptions>): Promise<number> {
  const s = await startQemuNbd(runner, { image, readOnly: true, socketDir: dir, ...extra });
  try {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const c = await connectNbd({ socket: s.socket, exportName: s.exportName });
    const chunks = Math.ceil(c.sizeBytes / CHUNK);
    let next = 0;
    let bytes = 0;
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (next < chunks) {
          const i = next++;
          const b = await c.read(i * CHUNK, Math.min(CHUNK, c.sizeBytes - i * CHUNK));
          bytes += b.length;
        }
      }),
    );
    await c.close();
    if (bytes !== MIB * 1024 * 1024) throw new Error(`read ${bytes} bytes`);
    const cpu = process.cpuUsage(cpu0);
    cpuMs.push((cpu.user + cpu.system) / 1000);
    return performance.now() - t0;
  } finally {
    await s.stop();
  }
}

async function viaConvert(image: string): Promise<number> {
  const t0 = performance.now();
  await runner.run(
    [
      'qemu-img',
      'convert',
      '-n',
      '-f',
      'qcow2',
      '--target-image-opts',
      image,
      `driver=null-co,size=${MIB * 1024 * 1024}`,
    ],
    { timeoutMs: 600_000 },
  );
  return performance.now() - t0;
}

/** QEMU's own NBD client reading from the same qemu-nbd: what the NBD path itself costs. */
async function viaQemuNbdClient(image: string, dir: string): Promise<number> {
  const s = await startQemuNbd(runner, { image, readOnly: true, socketDir: dir });
  try {
    const t0 = performance.now();
    const out = await runner.run(
      [
        '/usr/bin/time',
        '-f',
        'cpu %U %S',
        'qemu-img',
        'convert',
        '-n',
        '-f',
        'raw',
        '--target-image-opts',
        `nbd+unix:///${s.exportName}?socket=${s.socket}`,
        `driver=null-co,size=${MIB * 1024 * 1024}`,
      ],
      { timeoutMs: 600_000 },
    );
    const m = /cpu ([\d.]+) ([\d.]+)/.exec(out.stderr);
    if (m) qemuCpuMs.push((Number(m[1]) + Number(m[2])) * 1000);
    return performance.now() - t0;
  } finally {
    await s.stop();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-nbd-'));
  try {
    const raw = join(dir, 'src.raw');
    const image = join(dir, 'src.qcow2');
    await runner.run(['dd', 'if=/dev/urandom', `of=${raw}`, 'bs=1M', `count=${MIB}`, 'status=none'], {
      timeoutMs: 600_000,
    });
    await runner.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, image], { timeoutMs: 600_000 });
    rmSync(raw);
    await viaConvert(image); // warm the cache, untimed
    const sides: Record<string, () => Promise<number>> = {
      'nbd client (qemu-nbd cache=writeback)': () => viaNbd(image, join(dir, 'wb'), {}),
      'nbd client (qemu-nbd cache=none aio=native)': () =>
        viaNbd(image, join(dir, 'direct'), { cache: 'none', aio: 'native' }),
      'qemu-img convert to null-co': () => viaConvert(image),
      'qemu-img convert via qemu-nbd (QEMU NBD client)': () => viaQemuNbdClient(image, join(dir, 'qc')),
    };
    const runs: Record<string, number[]> = Object.fromEntries(Object.keys(sides).map((k) => [k, []]));
    const names = Object.keys(sides).filter((n) => !(SKIP_DIRECT && n.includes('cache=none')));
    for (let r = 0; r < REPEAT; r++) {
      const order = r % 2 === 0 ? names : [...names].reverse();
      for (const name of order) runs[name]!.push(await sides[name]!());
    }
    console.log(
      `${MIB} MiB qcow2 (random data), ${CHUNK >> 20} MiB reads, ${IN_FLIGHT} in flight, ${REPEAT} repeats`,
    );
    for (const name of names) {
      const ms = median(runs[name]!);
      console.log(
        `${name.padEnd(46)} median ${round(ms / 1000, 2)} s  ${round(MIB / (ms / 1000), 0)} MiB/s  runs ${runs[name]!.map((x) => round(x / 1000, 2)).join(', ')}`,
      );
    }
    console.log(
      `client CPU (user+sys) per run: vmlink ${round(median(cpuMs) / 1000, 2)} s (both cache modes), QEMU's NBD client ${round(median(qemuCpuMs) / 1000, 2)} s; load average ${loadavg()
        .map((x) => round(x, 1))
        .join(' ')} on ${cpus().length} cores`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
