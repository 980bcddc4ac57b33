import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../../test/helpers/cli.js';
import { identify, isRunning, writeIdentityFile } from '../shared/process.js';
import { stopDaemon } from './main.js';

const BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));

describe('stopDaemon', () => {
  let dir: string;
  let children: ChildProcess[];
  const saved = process.env.VMLINK_RUN_DIR;
  /** A process whose command line reads like `vmlink daemon` (what a detached controller looks like in /proc). */
  const fakeDaemon = () => start(process.execPath, ['-e', 'setInterval(() => {}, 1000)', BIN, 'daemon']);
  const start = (cmd: string, args: string[]) => {
    const c = spawn(cmd, args, { stdio: 'ignore' });
    children.push(c);
    return c;
  };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-ctl-stop-'));
    process.env.VMLINK_RUN_DIR = dir;
    children = [];
  });
  afterEach(() => {
    for (const c of children) c.kill('SIGKILL');
    if (saved === undefined) delete process.env.VMLINK_RUN_DIR;
    else process.env.VMLINK_RUN_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  it('stops the process its identity file names, and forgets it', async () => {
    const id = (await identify(fakeDaemon().pid!))!;
    await writeIdentityFile(join(dir, 'controller.json'), id);
    expect(await stopDaemon()).toBe(`controller stopped (pid ${id.pid})`);
    expect(await isRunning(id)).toBe(false);
    expect(await stopDaemon()).toBe('controller not running');
  });

  it('leaves alone a process that only has the recorded pid (another start time)', async () => {
    const id = (await identify(fakeDaemon().pid!))!;
    await writeIdentityFile(join(dir, 'controller.json'), { pid: id.pid, startTime: id.startTime + 1 });
    expect(await stopDaemon()).toBe('controller not running');
    expect(await isRunning(id)).toBe(true);
  });

  it('refuses a record naming an unrelated live process (a sleep), even with its exact identity', async () => {
    const sleep = (await identify(start('sleep', ['60']).pid!))!;
    await writeIdentityFile(join(dir, 'controller.json'), sleep);
    await expect(stopDaemon()).rejects.toThrow(
      new RegExp(
        `names pid ${sleep.pid} \\(sleep\\), which is not a vmlink controller: nothing was signalled`,
      ),
    );
    expect(await isRunning(sleep)).toBe(true);
  });

  it('`vmlink daemon --stop` refuses a pidfile pointing at a sleep, and the sleep lives', async () => {
    const sleep = (await identify(start('sleep', ['60']).pid!))!;
    writeFileSync(join(dir, 'controller.pid'), `${sleep.pid}\n`);
    const r = await runCli(['daemon', '--stop'], { VMLINK_RUN_DIR: dir }, 60_000);
    expect(r.code, r.stdout + r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(/\(sleep\), which is not a vmlink controller: nothing was signalled/);
    expect(await isRunning(sleep)).toBe(true);
  });
});
