import { spawn } from 'node:child_process';

/** The machine-wide lock every test that boots QEMU guests holds, so guests of parallel test runs never compete. */
export const VM_LOCK = '/tmp/vmlink-vm.lock';

/** Runs `fn` while holding the VM lock (see `acquireVmLock`). */
export async function withVmLock<T>(
  fn: () => Promise<T>,
  opts: { lock?: string; timeoutMs?: number } = {},
): Promise<T> {
  const release = await acquireVmLock(opts);
  try {
    return await fn();
  } finally {
    await release();
  }
}

/**
 * Takes `flock LOCK` and returns its release function (for beforeAll/afterAll pairs). The lock is held by a
 * child `flock LOCK cat` whose stdin is our pipe: `cat` echoing a byte back proves the lock is taken, and
 * closing stdin (or our death) releases it. Uses node:child_process because the Runner has no interactive stdin.
 */
export async function acquireVmLock(
  opts: { lock?: string; timeoutMs?: number } = {},
): Promise<() => Promise<void>> {
  const lock = opts.lock ?? VM_LOCK;
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const child = spawn('flock', ['-w', String(Math.ceil(timeoutMs / 1000)), lock, 'cat'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const release = async () => {
    child.stdin.end();
    await exited;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        err += d;
      });
      child.stdout.once('data', () => resolve());
      child.once('error', reject);
      child.once('close', (code) => reject(new Error(`flock ${lock} failed (exit ${code}): ${err.trim()}`)));
      child.stdin.write('x\n');
    });
  } catch (e) {
    await release();
    throw e;
  }
  return release;
}
