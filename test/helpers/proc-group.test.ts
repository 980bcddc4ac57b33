// The integration runner's stop path (int-run.ts): process groups stopped as a whole (proc-group.ts), and a real
// vitest asked to stop (graceful-stop.ts) runs its afterAll hooks. Tiny child scripts stand in for the test files.
import { type ChildProcess, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { STOP_SIGNAL } from './graceful-stop.js';
import { groupAlive, spawnGroup, stopGroup } from './proc-group.js';

const dir = mkdtempSync(join(tmpdir(), 'cis-proc-group-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** A node child leading its own group, with a grandchild (`sleep`) in the same group; resolves once both run. */
async function family(
  script: string,
): Promise<{ child: ChildProcess; grandchild: number; out: () => string }> {
  const child = spawnGroup(
    process.execPath,
    [
      '-e',
      `const g = require('node:child_process').spawn('sleep', ['60'], { stdio: 'ignore' });
       ${script}
       console.log('grandchild ' + g.pid);
       setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  for (;;) {
    const m = /grandchild (\d+)/.exec(out);
    if (m) return { child, grandchild: Number(m[1]), out: () => out };
    if (child.exitCode !== null) throw new Error(`child exited early: ${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('stopGroup', () => {
  it('asks the leader first; what it leaves in its group gets SIGTERM once it has exited', async () => {
    const f = await family(`process.on('${STOP_SIGNAL}', () => { console.log('asked'); process.exit(0); });`);
    await stopGroup(f.child, { ask: STOP_SIGNAL, graceMs: 10_000, killMs: 10_000, pollMs: 10 });
    expect(f.out()).toContain('asked');
    expect(f.child.exitCode).toBe(0);
    expect(alive(f.grandchild)).toBe(false);
    expect(groupAlive(f.child.pid!)).toBe(false);
  });

  it('a leader that ignores the ask and SIGTERM is killed with its group after the grace', async () => {
    const f = await family(
      `process.on('${STOP_SIGNAL}', () => console.log('asked'));
       process.on('SIGTERM', () => console.log('term'));`,
    );
    await stopGroup(f.child, { ask: STOP_SIGNAL, graceMs: 200, killMs: 200, pollMs: 10 });
    if (f.child.exitCode === null && f.child.signalCode === null)
      await new Promise((r) => f.child.once('exit', r));
    expect(f.out()).toMatch(/asked\n(.|\n)*term\n/);
    expect(f.child.signalCode).toBe('SIGKILL');
    expect(alive(f.grandchild)).toBe(false);
    expect(groupAlive(f.child.pid!)).toBe(false);
  });

  it('a second signal (hurry) cuts the grace short', async () => {
    const f = await family(`process.on('${STOP_SIGNAL}', () => console.log('asked'));`);
    const hurry = new Promise<void>((r) => setTimeout(r, 100));
    // A grace past the test's timeout: without the hurry the test fails.
    await stopGroup(f.child, { ask: STOP_SIGNAL, graceMs: 600_000, killMs: 10_000, pollMs: 10 }, hurry);
    expect(f.out()).toContain('asked');
    expect(alive(f.grandchild)).toBe(false);
    expect(groupAlive(f.child.pid!)).toBe(false);
  });
});

describe('graceful-stop', () => {
  it('a real vitest asked to stop ends the running test, skips the rest and runs afterAll', async () => {
    const root = join(dir, 'vitest');
    spawnSync('mkdir', ['-p', root]);
    const mark = (name: string) => join(root, name);
    const plugin = join(import.meta.dirname, 'graceful-stop.ts');
    writeFileSync(
      join(root, 'vitest.config.mjs'),
      `import { gracefulStop } from ${JSON.stringify(plugin)};
       export default { plugins: [gracefulStop()], test: { globals: true, include: ['*.test.mjs'], testTimeout: 60000 } };`,
    );
    writeFileSync(
      join(root, 'stop.test.mjs'),
      `import { writeFileSync } from 'node:fs';
       afterAll(() => writeFileSync(${JSON.stringify(mark('down'))}, ''));
       test('runs until aborted', async ({ signal }) => {
         writeFileSync(${JSON.stringify(mark('running'))}, '');
         await new Promise((r) => signal.addEventListener('abort', r));
       });
       test('never starts', () => writeFileSync(${JSON.stringify(mark('ran'))}, ''));`,
    );
    const vitest = join(import.meta.dirname, '..', '..', 'node_modules', 'vitest', 'vitest.mjs');
    const child = spawnGroup(process.execPath, [vitest, 'run', '--root', root], {
      stdio: 'ignore',
      env: { ...process.env, VITEST: undefined, VITEST_WORKER_ID: undefined, VITEST_POOL_ID: undefined },
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    while (!existsSync(mark('running'))) {
      if (child.exitCode !== null) throw new Error(`vitest exited ${child.exitCode} before the test ran`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await stopGroup(child, { ask: STOP_SIGNAL, graceMs: 15_000, killMs: 5_000 });
    expect(await exited).not.toBe(0);
    expect(existsSync(mark('down'))).toBe(true);
    expect(existsSync(mark('ran'))).toBe(false);
    expect(groupAlive(child.pid!)).toBe(false);
  }, 40_000);
});
