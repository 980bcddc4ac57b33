import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FsTree, readCpio, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG, writeCpio } from './cpio.js';

function sample(): FsTree {
  return new FsTree()
    .file('init', '#!/bin/sh\necho hi\n', 0o755)
    .file('etc/vmlink/modules', 'a.ko\nb.ko\n')
    .file('odd/len-1', 'x')
    .file('odd/len-0', '')
    .symlink('bin/sh', '/bin/busybox')
    .file('bin/busybox', Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2]), 0o755)
    .charDev('dev/console', 5, 1);
}

const hasCpio = spawnSync('cpio', ['--version']).status === 0;

describe('cpio newc writer', () => {
  it('round-trips through its own reader', () => {
    const entries = readCpio(sample().toCpio());
    const byPath = new Map(entries.map((e) => [e.path, e]));
    expect([...byPath.keys()]).toEqual([
      'bin',
      'bin/busybox',
      'bin/sh',
      'dev',
      'dev/console',
      'etc',
      'etc/vmlink',
      'etc/vmlink/modules',
      'init',
      'odd',
      'odd/len-0',
      'odd/len-1',
    ]);
    expect(byPath.get('init')!.mode).toBe(S_IFREG | 0o755);
    expect(byPath.get('init')!.data.toString()).toBe('#!/bin/sh\necho hi\n');
    expect(byPath.get('odd/len-1')!.data.toString()).toBe('x');
    expect(byPath.get('bin/sh')!.mode).toBe(S_IFLNK | 0o777);
    expect(byPath.get('bin/sh')!.data.toString()).toBe('/bin/busybox');
    expect(byPath.get('etc/vmlink')!.mode).toBe(S_IFDIR | 0o755);
    expect(byPath.get('dev/console')).toMatchObject({ mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 });
  });

  it('aligns every header and data block to 4 bytes and ends with the trailer', () => {
    const buf = writeCpio([{ path: 'a', mode: S_IFREG | 0o644, data: Buffer.from('abc') }]);
    expect(buf.length % 4).toBe(0);
    expect(buf.subarray(0, 6).toString()).toBe('070701');
    expect(buf.includes(Buffer.from('TRAILER!!!\0'))).toBe(true);
  });

  it('refuses absolute and parent paths', () => {
    expect(() => writeCpio([{ path: '../x', mode: S_IFREG, data: Buffer.alloc(0) }])).toThrow(
      /bad cpio path/,
    );
    expect(() => new FsTree().file('a', 'x').file('a/b', 'y')).toThrow(/not a directory/);
  });

  // GNU cpio is only the cross-check of our own reader; setup installs it, a bare machine may lack it.
  it.skipIf(!hasCpio)('is read by GNU cpio (-t and -i)', () => {
    const archive = sample().toCpio();
    const list = spawnSync('cpio', ['-t', '--quiet'], { input: archive, encoding: 'utf8' });
    expect(list.status, list.stderr).toBe(0);
    expect(list.stdout.split('\n').filter(Boolean)).toContain('etc/vmlink/modules');
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-cpio-'));
    try {
      // Device nodes need root to create: extract everything else.
      const ex = spawnSync('cpio', ['-i', '-d', '--quiet', '--no-absolute-filenames', '-f', 'dev/console'], {
        input: archive,
        cwd: dir,
        encoding: 'utf8',
      });
      expect(ex.status, ex.stderr).toBe(0);
      expect(readFileSync(join(dir, 'etc/vmlink/modules'), 'utf8')).toBe('a.ko\nb.ko\n');
      expect(readlinkSync(join(dir, 'bin/sh'))).toBe('/bin/busybox');
      expect(statSync(join(dir, 'init')).mode & 0o777).toBe(0o755);
      expect(readFileSync(join(dir, 'bin/busybox'))).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2]));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
