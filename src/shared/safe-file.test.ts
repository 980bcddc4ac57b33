import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openRegular, readTail, removeTree, rotateLog, UnsafeFileError } from './safe-file.js';

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-safe-file-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function mkfifo(path: string): Promise<void> {
  await new Promise<void>((resolve, reject) =>
    spawn('mkfifo', [path]).once('exit', (c) => (c === 0 ? resolve() : reject(new Error(`mkfifo ${c}`)))),
  );
}

describe('readTail', () => {
  it('reads only the last bytes of a regular file, and nothing of a missing one', async () => {
    await writeFile(join(dir, 'log'), `${'a'.repeat(1000)}tail-end`);
    expect(await readTail(join(dir, 'log'), 8)).toBe('tail-end');
    expect(await readTail(join(dir, 'log'), 1 << 20)).toHaveLength(1008);
    expect(await readTail(join(dir, 'missing'), 10)).toBe('');
  });

  it('refuses a planted symbolic link (console.log -> a root-only file) instead of printing its target', async () => {
    const secret = join(dir, 'shadow');
    await writeFile(secret, 'root:$y$secret-hash:19000::::::\n', { mode: 0o600 });
    await symlink(secret, join(dir, 'console.log'));
    const e = await readTail(join(dir, 'console.log'), 4096).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnsafeFileError);
    expect((e as Error).message).toBe(`${join(dir, 'console.log')}: is a symbolic link, refused`);
  });

  it('refuses a FIFO at once instead of waiting for a writer', async () => {
    await mkfifo(join(dir, 'qemu.pid'));
    const t0 = Date.now();
    await expect(readTail(join(dir, 'qemu.pid'), 64)).rejects.toThrow(/is not a regular file, refused/);
    expect(Date.now() - t0).toBeLessThan(5000); // a blocking open would never return
  });

  it('refuses a directory', async () => {
    await mkdir(join(dir, 'd'));
    await expect(openRegular(join(dir, 'd'))).rejects.toBeInstanceOf(UnsafeFileError);
  });
});

describe('rotateLog', () => {
  it('moves the last maxBytes to .1 and truncates the log in place past the cap', async () => {
    const log = join(dir, 'console.log');
    await writeFile(log, `${'x'.repeat(300)}KEEP`);
    const before = (await stat(log)).ino;
    expect(await rotateLog(log, 100)).toBe(true);
    expect((await stat(log)).size).toBe(0);
    expect((await stat(log)).ino).toBe(before); // the writer's descriptor still names the log
    const old = await readFile(`${log}.1`, 'utf8');
    expect(old).toHaveLength(100);
    expect(old.endsWith('KEEP')).toBe(true);
    expect(await rotateLog(log, 100)).toBe(false);
    expect(await rotateLog(join(dir, 'missing'), 100)).toBe(false);
  });

  it('replaces a planted link at .1 without writing through it', async () => {
    const log = join(dir, 'console.log');
    const victim = join(dir, 'victim');
    await writeFile(victim, 'untouched');
    await symlink(victim, `${log}.1`);
    await writeFile(log, 'y'.repeat(50));
    expect(await rotateLog(log, 10)).toBe(true);
    expect(await readFile(victim, 'utf8')).toBe('untouched');
    expect(await readFile(`${log}.1`, 'utf8')).toBe('y'.repeat(10));
  });

  it('refuses a log that is a link', async () => {
    await writeFile(join(dir, 'big'), 'z'.repeat(100));
    await symlink(join(dir, 'big'), join(dir, 'console.log'));
    await expect(rotateLog(join(dir, 'console.log'), 10)).rejects.toBeInstanceOf(UnsafeFileError);
    expect((await stat(join(dir, 'big'))).size).toBe(100);
  });
});

describe('removeTree', () => {
  it('removes links inside the tree, never what they point to', async () => {
    const outside = join(dir, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'precious'), 'keep me');
    const tree = join(dir, 'vm');
    await mkdir(join(tree, 'run', 'sub'), { recursive: true });
    await symlink(outside, join(tree, 'run', 'swapped'));
    await symlink(join(outside, 'precious'), join(tree, 'run', 'sub', 'file-link'));
    await removeTree(tree);
    expect(existsSync(tree)).toBe(false);
    expect(await readFile(join(outside, 'precious'), 'utf8')).toBe('keep me');
  });

  it('unlinks a link given as the tree itself, and ignores a missing path', async () => {
    const outside = join(dir, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'precious'), 'keep me');
    await symlink(outside, join(dir, 'link'));
    await removeTree(join(dir, 'link'));
    expect(existsSync(join(dir, 'link'))).toBe(false);
    expect(await readFile(join(outside, 'precious'), 'utf8')).toBe('keep me');
    await removeTree(join(dir, 'missing'));
  });
});
