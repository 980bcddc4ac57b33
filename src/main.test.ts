// The `vmlink` entry as users run it: bin/vmlink.js runs the compiled dist/ (built by the tests' global setup),
// answers `--version` without the command tree, and says what to run when there is no build.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { VERSION } from './shared/version.js';

const BIN = fileURLToPath(new URL('../bin/vmlink.js', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'vmlink-entry-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const run = (bin: string, args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

describe('bin/vmlink.js', () => {
  it('prints the package version for --version and -V', () => {
    for (const flag of ['--version', '-V']) {
      const r = run(BIN, [flag]);
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(`${VERSION}\n`);
    }
  });

  it('runs the command tree from dist for anything else', () => {
    const r = run(BIN, ['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Usage: vmlink');
    expect(r.stdout).toContain('apply');
  });

  it('runs through a symlink on the PATH, as setup installs it', () => {
    const link = join(tmp, 'vmlink');
    symlinkSync(BIN, link);
    expect(execFileSync(link, ['--version'], { encoding: 'utf8' })).toBe(`${VERSION}\n`);
  });

  it('without a build, exits 1 and tells the user to run npm run build', () => {
    const checkout = join(tmp, 'checkout');
    mkdirSync(join(checkout, 'bin'), { recursive: true });
    copyFileSync(BIN, join(checkout, 'bin', 'vmlink.js'));
    const r = run(join(checkout, 'bin', 'vmlink.js'), ['status']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('vmlink is not built');
    expect(r.stderr).toContain(`run \`npm run build\` in ${checkout}`);
    expect(r.stdout).toBe('');
  });
});
