// Typed wrapper over modprobe(8): load a kernel module, or ask whether it could be loaded, through the runner.
import { InvalidRequestError } from '../shared/errors.js';
import type { Runner } from './runner.js';

// Module names: letters, digits, `_` and `-` (modprobe treats them alike); never an option or a path.
const MODULE = /^[a-z0-9][a-z0-9_-]{0,55}$/;

/** `modprobe -q [-n] MODULE` as argv (`-n`: dry run, loads nothing). */
export function modprobeArgv(module: string, opts: { dryRun?: boolean } = {}): string[] {
  if (!MODULE.test(module))
    throw new InvalidRequestError(`invalid kernel module name ${JSON.stringify(module)}`);
  return ['modprobe', '-q', ...(opts.dryRun ? ['-n'] : []), module];
}

/**
 * Loads `module` (or, with `dryRun`, checks that it could be loaded): true when modprobe succeeded, false when it
 * failed or is missing. A module is machine-wide: loading one changes no namespace's settings.
 */
export async function modprobe(
  runner: Runner,
  module: string,
  opts: { dryRun?: boolean; netns?: string } = {},
): Promise<boolean> {
  const argv = modprobeArgv(module, opts);
  const r = await runner
    .run(argv, { allowFailure: true, ...(opts.netns ? { netns: opts.netns } : {}) })
    .catch(() => undefined);
  return r?.code === 0;
}
