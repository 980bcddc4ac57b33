import { spawn } from 'node:child_process';

/** The machine-wide lock every test that boots QEMU guests holds, so guests of parallel test runs never compete. */
export const VM_LOCK = '/tmp/vmlink-vm.lock';

/**
 * How many guest-booting test files may run at once: `VMLINK_VM_SLOTS` (1 to 4, default 1). scripts/test-integration.sh
 * sets 2 for its two guest workers: their files mostly wait on agents, probes and timers, not on the CPU. Slot 0 is
 * `VM_LOCK` itself, slot i the file `VM_LOCK.i`.
 */
export function vmSlots(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.VMLINK_VM_SLOTS;
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 4)
    throw new Error(`VMLINK_VM_SLOTS must be 1 to 4, not ${JSON.stringify(raw)}`);
  return n;
}

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
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const slots = opts.lock ? 1 : vmSlots();
  const lock = opts.lock ?? VM_LOCK;
  if (slots === 1) return flockHeld(lock, ['-w', String(Math.ceil(timeoutMs / 1000))]);
  // Several slots: take the first free one, polling (flock cannot wait on "any of" several files).
  const end = Date.now() + timeoutMs;
  for (;;) {
    for (let i = 0; i < slots; i++) {
      const release = await flockHeld(i === 0 ? lock : `${lock}.${i}`, ['-n']).catch(() => undefined);
      if (release) return release;
    }
    if (Date.now() > end) throw new Error(`no free VM slot of ${slots} (${lock}*) within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** `flock FLOCK_ARGS LOCK cat`, resolved once the lock is held, with its release function. */
async function flockHeld(lock: string, flockArgs: string[]): Promise<() => Promise<void>> {
  const child = spawn('flock', [...flockArgs, lock, 'cat'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  // `flock -n` exits at once on a held lock: our write then meets a closed pipe (the 'close' below says why).
  child.stdin.on('error', () => {});
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
