import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { describe, expect, it } from 'vitest';
import { pollUntil } from '../../shared/time.js';
import { HostFiguresReader, parseMeminfo, parseProcStatCpu } from './host.js';

// Captured on this machine (2 CPUs).
const procStat = readFileSync(new URL('./__fixtures__/proc-stat.txt', import.meta.url), 'utf8');
const meminfo = readFileSync(new URL('./__fixtures__/meminfo.txt', import.meta.url), 'utf8');

describe('/proc parsers', () => {
  it('reads busy ticks (user, nice, system, irq, softirq, steal) and the CPUs from /proc/stat', () => {
    // cpu  2688237 0 735067 1047798 3155 0 14275 0 0 0: idle and iowait are not busy.
    expect(parseProcStatCpu(procStat)).toEqual({ busyTicks: 2688237 + 735067 + 14275, cpus: 2 });
    expect(() => parseProcStatCpu('cpu0 1 2 3\n')).toThrow(/cpu line/);
    expect(() => parseProcStatCpu('cpu  1 2 x 4 5 6 7 8\n')).toThrow(/cpu line/);
  });

  it('reads MemTotal and MemAvailable from /proc/meminfo', () => {
    const m = parseMeminfo(meminfo);
    expect(m.totalBytes).toBe(24683548 * 1024);
    expect(m.availableBytes).toBeGreaterThan(0);
    expect(m.availableBytes).toBeLessThan(m.totalBytes);
    expect(() => parseMeminfo('MemTotal: 10 kB\n')).toThrow(/MemAvailable/);
  });
});

/** Burns CPU in a child for `ms` and waits for it (its ticks then land in this process's children's time). */
function burn(ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['-e', `const end = Date.now() + ${ms}; while (Date.now() < end);`]);
    c.on('error', reject);
    c.on('exit', () => resolve());
  });
}

describe('HostFiguresReader on this machine', () => {
  it('machine scope: the CPUs, busy seconds and memory of the whole machine', async () => {
    const r = new HostFiguresReader('machine');
    const a = await r.read([]);
    expect(a.cpus).toBe(cpus().length);
    expect(a.memoryUsedBytes).toBeGreaterThan(0);
    expect(a.memoryUsedBytes).toBeLessThan(a.memoryTotalBytes);
    await burn(300);
    expect((await r.read([])).cpuSecondsTotal).toBeGreaterThan(a.cpuSecondsTotal);
  });

  it("processes scope: the host's processes only; one that exits keeps its CPU seconds in the sum", async () => {
    // No process is in this namespace: the host's processes are the ones named (as its QEMU processes are).
    const r = new HostFiguresReader('processes', async () => 'net:[0]');
    expect(await r.read([])).toMatchObject({ cpuSecondsTotal: 0, memoryUsedBytes: 0 });
    // It burns 1.5 s of CPU (not of wall time: on a loaded machine a second of wall time may give it less than 0.3 s).
    const c = spawn(process.execPath, [
      '-e',
      'const t0 = Date.now(); while (process.cpuUsage().user < 1.5e6 && Date.now() - t0 < 30000);',
    ]);
    const exited = new Promise((resolve) => c.on('exit', resolve));
    const burnt = async () => {
      const f = await r.read([c.pid!]);
      return f.cpuSecondsTotal > 0.3 ? f : undefined;
    };
    const running =
      (await pollUntil(burnt, { timeoutMs: 20_000, intervalMs: 50 })) ?? (await r.read([c.pid!]));
    expect(running.cpuSecondsTotal).toBeGreaterThan(0.3);
    expect(running.memoryUsedBytes).toBeGreaterThan(1 << 20);
    await exited;
    // Its parent (this process) is not the host's: its last seen seconds stay, its memory goes.
    const gone = await r.read([c.pid!]);
    expect(gone.cpuSecondsTotal).toBe(running.cpuSecondsTotal);
    expect(gone.memoryUsedBytes).toBe(0);
  });
});
