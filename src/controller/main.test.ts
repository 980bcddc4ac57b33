import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { identify, isRunning, writeIdentityFile } from '../shared/process.js';
import { stopDaemon } from './main.js';

describe('stopDaemon', () => {
  let dir: string;
  let child: ChildProcess;
  const saved = process.env.VMLINK_RUN_DIR;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-ctl-stop-'));
    process.env.VMLINK_RUN_DIR = dir;
    child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  });
  afterEach(() => {
    child.kill('SIGKILL');
    if (saved === undefined) delete process.env.VMLINK_RUN_DIR;
    else process.env.VMLINK_RUN_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  it('stops the process its identity file names, and forgets it', async () => {
    const id = (await identify(child.pid!))!;
    await writeIdentityFile(join(dir, 'controller.json'), id);
    expect(await stopDaemon()).toBe(`controller stopped (pid ${id.pid})`);
    expect(await isRunning(id)).toBe(false);
    expect(await stopDaemon()).toBe('controller not running');
  });

  it('leaves alone a process that only has the recorded pid (another start time)', async () => {
    const id = (await identify(child.pid!))!;
    await writeIdentityFile(join(dir, 'controller.json'), { pid: id.pid, startTime: id.startTime + 1 });
    expect(await stopDaemon()).toBe('controller not running');
    expect(await isRunning(id)).toBe(true);
  });

  it('leaves alone what a legacy bare pidfile names unless it runs `vmlink daemon`', async () => {
    writeFileSync(join(dir, 'controller.pid'), `${child.pid}\n`);
    expect(await stopDaemon()).toBe('controller not running');
    expect(await isRunning(child.pid!)).toBe(true);
  });
});
