import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  findFromPidfile,
  identify,
  isPid,
  isRunning,
  netnsOf,
  parsePid,
  parseProcStat,
  parseStatusRss,
  processArgv,
  processComm,
  processesOfUids,
  processFromPidfile,
  processRssBytes,
  processUid,
  procStat,
  readIdentityFile,
  readPidfile,
  runningFromIdentityFile,
  signalProcess,
  terminate,
  waitExited,
  writeIdentityFile,
} from './process.js';
import { pollUntil } from './time.js';

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function child(argv: string[]): ChildProcess {
  const c = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
  children.push(c);
  return c;
}

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'vmlink-proc-'));
  dirs.push(d);
  return d;
}

it('reads VmRSS from /proc/PID/status (0 for a kernel thread, which has none)', () => {
  // Lines of a running QEMU's status on this machine.
  const qemu = 'Name:\tqemu-system-x86\nVmHWM:\t  271604 kB\nVmRSS:\t  271588 kB\nRssAnon:\t  226352 kB\n';
  expect(parseStatusRss(qemu)).toBe(271588 * 1024);
  expect(parseStatusRss('Name:\tkthreadd\nState:\tS (sleeping)\n')).toBe(0);
});

describe('parseProcStat', () => {
  // Field 22 (start time) counts from the pid: pid (comm) state ppid ... ; comm may hold spaces and ") (".
  const fields = (state: string, start: number) =>
    `${state} 1 100 100 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 ${start} 5000 100`;

  it('reads pid, comm, state, ppid and start time', () => {
    expect(parseProcStat(`1234 (dnsmasq) ${fields('S', 98765)}\n`)).toEqual({
      pid: 1234,
      comm: 'dnsmasq',
      state: 'S',
      ppid: 1,
      startTime: 98765,
      cpuTicks: 0,
      childCpuTicks: 0,
    });
  });

  it('reads the CPU times of a real QEMU process (utime+stime, cutime+cstime)', () => {
    // Captured from a running QEMU on this machine.
    const text = `454 (qemu-system-x86) S 31823 454 454 0 -1 138412416 41346 0 0 0 787 171 0 0 20 0 4 0 2248976 1745076224 67823 18446744073709551615 94838064431104 94838070291541 140732015811328 0 0 0 268444224 4096 16451 0 0 0 17 0 0 0 0 0 0 94838073403640 94838078607792 94838683521024 140732015813443 140732015816599 140732015816599 140732015816668 0\n`;
    expect(parseProcStat(text)).toMatchObject({
      pid: 454,
      comm: 'qemu-system-x86',
      ppid: 31823,
      startTime: 2248976,
      cpuTicks: 787 + 171,
      childCpuTicks: 0,
    });
  });

  it('takes the command name up to the last parenthesis', () => {
    const s = parseProcStat(`77 (a) Z (b) ${fields('R', 5)}`);
    expect(s).toMatchObject({ pid: 77, comm: 'a) Z (b', state: 'R', startTime: 5 });
  });

  it('refuses malformed text', () => {
    expect(parseProcStat('')).toBeUndefined();
    expect(parseProcStat('12 dnsmasq S 1')).toBeUndefined();
    expect(parseProcStat('12 (x) S 1 2')).toBeUndefined();
    expect(parseProcStat(`x (x) ${fields('S', 1)}`)).toBeUndefined();
  });
});

describe('pids', () => {
  it('accepts 2..PID_MAX only', () => {
    expect([0, 1, -5, 2.5, 4_194_305, Number.NaN].map(isPid)).toEqual([
      false,
      false,
      false,
      false,
      false,
      false,
    ]);
    expect([2, 4_194_304].map(isPid)).toEqual([true, true]);
  });

  it('parses a pidfile strictly', () => {
    expect(parsePid('4242\n')).toBe(4242);
    expect(parsePid('  17 ')).toBe(17);
    for (const bad of ['', '1', '0', '-3', '12abc', '1e3', '0x10', '12 13', '99999999'])
      expect(parsePid(bad)).toBeUndefined();
  });
});

describe('process identity against real processes', () => {
  it('identifies a live child, tells it from a reused pid, and sees it gone after a kill', async () => {
    const c = child(['sleep', '30']);
    const id = await identify(c.pid!);
    expect(id?.pid).toBe(c.pid);
    expect(await processComm(c.pid!)).toBe('sleep');
    expect(await processArgv(c.pid!)).toEqual(['sleep', '30']);
    expect(await processUid(c.pid!)).toBe(process.getuid!());
    // sleep holds some memory and shares this process's network namespace.
    expect(await processRssBytes(c.pid!)).toBeGreaterThan(0);
    expect(await netnsOf(c.pid!)).toMatch(/^net:\[\d+\]$/);
    expect(await netnsOf(c.pid!)).toBe(await netnsOf('self'));
    expect(await isRunning(id!)).toBe(true);
    // Same pid, another start time: a later process that reused the pid. Never signalled.
    const impostor = { pid: id!.pid, startTime: id!.startTime + 1 };
    expect(await isRunning(impostor)).toBe(false);
    expect(await signalProcess(impostor, 'SIGKILL')).toBe(false);
    expect(await isRunning(id!)).toBe(true);

    expect(await signalProcess(id!, 'SIGKILL')).toBe(true);
    expect(await waitExited(id!, 5_000)).toBe(true);
    expect(await isRunning(c.pid!)).toBe(false);
  });

  it('finds the processes of a set of uids, and only those', async () => {
    // A uid nothing else on the machine uses (as a VM's own uid is).
    const uid = 1_879_000_000 + (process.pid % 1000);
    const c = child(['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', 'sleep', '30']);
    expect(await pollUntil(async () => (await processUid(c.pid!)) === uid, { timeoutMs: 5_000 })).toBe(true);
    expect(await processesOfUids(new Set([uid]))).toEqual([c.pid]);
    expect(await processesOfUids(new Set())).toEqual([]);
  });

  it('counts a zombie as exited', async () => {
    // The shell forks `sleep 1` and execs into a sleep that never reaps it: the first child stays a zombie. (It
    // outlives the exec by a second, so a loaded machine's shell cannot reap it first.)
    const c = child(['sh', '-c', 'sleep 1 & echo $!; exec sleep 30']);
    const zombie = await new Promise<number>((resolve) =>
      c.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
    );
    const state = await pollUntil(async () => (await procStat(zombie))?.state === 'Z', { timeoutMs: 5_000 });
    expect(state).toBe(true);
    expect(await identify(zombie)).toBeUndefined();
    expect(await isRunning(zombie)).toBe(false);
    expect(await waitExited(zombie, 0)).toBe(true);
    expect(await signalProcess({ pid: zombie, startTime: 0 }, 'SIGTERM')).toBe(false);
  });

  it('terminates with SIGTERM, and with SIGKILL what ignores it', async () => {
    const polite = (await identify(child(['sleep', '30']).pid!))!;
    expect(await terminate(polite, { graceMs: 3_000, killMs: 3_000 })).toBe('terminated');
    const c = child(['sh', '-c', 'trap "" TERM; echo ready; while :; do sleep 1; done']);
    await new Promise((r) => c.stdout!.once('data', r));
    const stubborn = (await identify(c.pid!))!;
    expect(await terminate(stubborn, { graceMs: 200, killMs: 3_000 })).toBe('killed');
    expect(await terminate(stubborn, { graceMs: 200, killMs: 200 })).toBe('not-running');
  });

  it('reports nothing for pids that are not ours to read', async () => {
    expect(await identify(1)).toBeUndefined(); // pid 1 is never one of ours
    expect(await procStat(4_194_305)).toBeUndefined();
    expect(await processArgv(-1)).toBeUndefined();
  });
});

describe('pidfiles and identity files', () => {
  it('reads a pidfile, and refuses links, non-regular files, oversized and garbled ones', async () => {
    const d = tmp();
    writeFileSync(join(d, 'ok.pid'), '4321\n');
    expect(await readPidfile(join(d, 'ok.pid'))).toBe(4321);
    symlinkSync(join(d, 'ok.pid'), join(d, 'link.pid'));
    expect(await readPidfile(join(d, 'link.pid'))).toBeUndefined();
    expect(await readPidfile(d)).toBeUndefined();
    writeFileSync(join(d, 'big.pid'), `4321${' '.repeat(100)}`);
    expect(await readPidfile(join(d, 'big.pid'))).toBeUndefined();
    writeFileSync(join(d, 'bad.pid'), 'pid=4321');
    expect(await readPidfile(join(d, 'bad.pid'))).toBeUndefined();
    expect(await readPidfile(join(d, 'missing.pid'))).toBeUndefined();
  });

  it('records an identity and finds exactly that process again', async () => {
    const d = tmp();
    const c = child(['sleep', '30']);
    const id = (await identify(c.pid!))!;
    await writeIdentityFile(join(d, 'x.identity'), id);
    expect(await readIdentityFile(join(d, 'x.identity'))).toEqual(id);
    expect(await runningFromIdentityFile(join(d, 'x.identity'))).toEqual(id);
    await writeIdentityFile(join(d, 'y.identity'), { ...id, startTime: id.startTime + 1 });
    expect(await runningFromIdentityFile(join(d, 'y.identity'))).toBeUndefined();
    writeFileSync(join(d, 'z.identity'), '{"pid": 1, "startTime": 0}');
    expect(await readIdentityFile(join(d, 'z.identity'))).toBeUndefined();
  });
});

describe('from a pidfile to a process to signal', () => {
  it('gives the identity only of the expected program, and says what a foreign pid is', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-pidfile-'));
    try {
      const sleep = child(['sleep', '31']);
      const pidfile = join(dir, 'x.pid');
      writeFileSync(pidfile, `${sleep.pid}\n`);
      const id = await identify(sleep.pid!);
      expect(await processFromPidfile(pidfile, { comm: 'sleep', args: ['31'] })).toEqual(id);
      expect(await processFromPidfile(pidfile, { comm: 'sleep', uid: process.getuid!() })).toEqual(id);
      // Another program, another argument, another user, another network namespace: not ours, never signalled.
      expect(await processFromPidfile(pidfile, { comm: 'dnsmasq' })).toBeUndefined();
      expect(await processFromPidfile(pidfile, { comm: 'sleep', args: ['--conf-file=/x'] })).toBeUndefined();
      expect(await processFromPidfile(pidfile, { comm: 'sleep', uid: 4242 })).toBeUndefined();
      expect(
        await processFromPidfile(pidfile, { comm: 'sleep', netns: 'vmlink-no-such-ns' }),
      ).toBeUndefined();
      expect(await processFromPidfile(pidfile, { argv: (a) => a.includes('daemon') })).toBeUndefined();
      expect(await findFromPidfile(pidfile, { comm: 'dnsmasq' })).toEqual({
        id,
        comm: 'sleep',
        expected: false,
      });
      expect(await isRunning(id!)).toBe(true);
      // A pidfile naming nothing alive names no process at all.
      sleep.kill('SIGKILL');
      await waitExited(id!, 5_000);
      expect(await findFromPidfile(pidfile, { comm: 'sleep' })).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
