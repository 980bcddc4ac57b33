import { execFileSync } from 'node:child_process';
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  readFileCapped,
  readFileCappedSync,
  readJsonFile,
  readJsonFileSync,
  StateFileError,
  writeJsonFile,
  writeJsonFileSync,
} from './state-file.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'vmlink-state-'));
  dirs.push(d);
  return d;
}

const Schema = z.object({ name: z.string(), n: z.number().int() }).strict();

describe('state files', () => {
  it('writes atomically with the given mode and reads back what the schema accepts', async () => {
    const d = tmp();
    const f = join(d, 'a.json');
    await writeJsonFile(f, { name: 'x', n: 1 });
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(await readJsonFile(f, Schema)).toEqual({ name: 'x', n: 1 });
    writeJsonFileSync(f, { name: 'y', n: 2 }, { mode: 0o644 });
    expect(readJsonFileSync(f, Schema)).toEqual({ name: 'y', n: 2 });
    expect(statSync(f).mode & 0o777).toBe(0o644);
    expect(readdirSync(d)).toEqual(['a.json']); // no temp file left
  });

  it('replaces a planted link instead of writing through it', async () => {
    const d = tmp();
    writeFileSync(join(d, 'victim'), 'keep');
    symlinkSync(join(d, 'victim'), join(d, 'a.json'));
    await writeJsonFile(join(d, 'a.json'), { name: 'x', n: 1 });
    expect(readFileSync(join(d, 'victim'), 'utf8')).toBe('keep');
    expect(await readJsonFile(join(d, 'a.json'), Schema)).toEqual({ name: 'x', n: 1 });
  });

  it('returns undefined for a missing file', async () => {
    expect(await readJsonFile(join(tmp(), 'none.json'), Schema)).toBeUndefined();
    expect(readJsonFileSync(join(tmp(), 'none.json'), Schema)).toBeUndefined();
  });

  it('refuses links, directories, FIFOs, oversized files, bad JSON and content the schema rejects', async () => {
    const d = tmp();
    writeFileSync(join(d, 'ok.json'), '{"name":"x","n":1}');
    symlinkSync(join(d, 'ok.json'), join(d, 'link.json'));
    execFileSync('mkfifo', [join(d, 'fifo.json')]);
    writeFileSync(join(d, 'big.json'), `{"name":"${'x'.repeat(2000)}","n":1}`);
    writeFileSync(join(d, 'bad.json'), '{"name":');
    writeFileSync(join(d, 'wrong.json'), '{"name":"x","n":"one"}');
    const cases: Array<[string, RegExp]> = [
      ['link.json', /symbolic link/],
      [d, /not a regular file/],
      ['fifo.json', /not a regular file/],
      ['big.json', /larger than 1024 bytes/],
      ['bad.json', /not valid JSON/],
      ['wrong.json', /unexpected content at n/],
    ];
    for (const [f, msg] of cases) {
      const path = f.startsWith('/') ? f : join(d, f);
      await expect(readJsonFile(path, Schema, { maxBytes: 1024 })).rejects.toThrow(msg);
      expect(() => readJsonFileSync(path, Schema, { maxBytes: 1024 })).toThrow(StateFileError);
    }
  });

  it('reads /proc files (size 0 in stat) to their end', async () => {
    const text = await readFileCapped('/proc/self/status');
    expect(text).toMatch(/^Name:/);
    expect(readFileCappedSync('/proc/self/status')).toMatch(/\nPid:\s+\d+/);
  });

  it('reads files of every size up to the cap exactly, and refuses one byte more', async () => {
    const d = tmp();
    const max = 100_000;
    for (const size of [0, 1, 16 * 1024, 40_000, max]) {
      const f = join(d, `f${size}`);
      const body = 'x'.repeat(size);
      writeFileSync(f, body);
      expect(await readFileCapped(f, { maxBytes: max })).toBe(body);
      expect(readFileCappedSync(f, { maxBytes: max })).toBe(body);
    }
    writeFileSync(join(d, 'big'), 'x'.repeat(max + 1));
    await expect(readFileCapped(join(d, 'big'), { maxBytes: max })).rejects.toThrow(
      /larger than 100000 bytes/,
    );
    expect(() => readFileCappedSync(join(d, 'big'), { maxBytes: max })).toThrow(/larger than 100000 bytes/);
    // A /proc file larger than one 16 KiB read, sized 0 by stat, is read whole.
    const maps = await readFileCapped('/proc/self/maps');
    expect(maps?.split('\n').length).toBeGreaterThan(5);
  });
});
