// Stopping a VM's QEMU: ACPI powerdown (unless forced), then QMP quit, then SIGKILL; each step waits for the
// process it identified at the start, so a recycled pid is never signalled.
import { TimeoutError } from '../../../shared/errors.js';
import {
  QMP_STATUS_TIMEOUT_MS,
  VM_FENCE_QUIT_MS,
  VM_POWERDOWN_TIMEOUT_MS,
  VM_QUIT_TIMEOUT_MS,
} from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import { type ProcessIdentity, signalProcess, waitExited } from '../../../shared/process.js';
import type { OpContext } from '../../network/types.js';
import type { QmpClient } from './qmp.js';

/** How a stop ended. */
export interface StopOutcome {
  /** `powerdown`: the guest shut down on ACPI; `quit`: QEMU quit on QMP; `kill`: SIGKILL; `none`: it was not running. */
  method: 'powerdown' | 'quit' | 'kill' | 'none';
  ms: number;
}

/** What a stop needs from its driver. */
export interface StopDeps {
  name: string;
  /** The VM's running QEMU, or undefined when it runs no more. */
  qemu: ProcessIdentity | undefined;
  qmp: (timeoutMs?: number) => Promise<QmpClient>;
  /** Cleans up after QEMU is gone (QMP connection, pidfile, cgroup). */
  cleanup: () => Promise<void>;
  ctx?: OpContext;
}

/** Stops VM `name`'s QEMU as gently as `opts` allows and says how. */
export async function stopQemu(
  d: StopDeps,
  opts: { force: boolean; timeoutMs?: number },
): Promise<StopOutcome> {
  const { name, qemu, ctx } = d;
  const started = Date.now();
  if (qemu === undefined) return { method: 'none', ms: 0 };
  const done = async (method: StopOutcome['method']) => {
    await d.cleanup();
    return { method, ms: Date.now() - started };
  };
  if (!opts.force) {
    ctx?.progress?.(`powering down VM ${name}`);
    try {
      await (await d.qmp()).execute('system_powerdown');
      if (await waitExited(qemu, opts.timeoutMs ?? VM_POWERDOWN_TIMEOUT_MS, 100)) return done('powerdown');
    } catch (e) {
      log.warn({ vm: name, err: (e as Error).message }, 'system_powerdown failed; quitting');
    }
  }
  ctx?.progress?.(`quitting VM ${name}`);
  try {
    await (await d.qmp(QMP_STATUS_TIMEOUT_MS)).execute('quit', undefined, QMP_STATUS_TIMEOUT_MS);
  } catch {
    // QEMU closes the socket as it quits, or QMP is dead: either way SIGKILL follows if needed
  }
  if (await waitExited(qemu, VM_QUIT_TIMEOUT_MS, 100)) return done('quit');
  ctx?.progress?.(`killing VM ${name} (pid ${qemu.pid})`);
  await signalProcess(qemu, 'SIGKILL');
  if (!(await waitExited(qemu, VM_QUIT_TIMEOUT_MS, 100)))
    throw new TimeoutError(`QEMU of VM ${name} (pid ${qemu.pid}) survived SIGKILL`, `vm/${name}`);
  return done('kill');
}

/**
 * Fences VM `name`'s QEMU (the cluster watchdog): QMP `quit` (QEMU flushes what it holds), SIGKILL when it has not
 * exited within VM_FENCE_QUIT_MS. No guest shutdown, no lock, no wait on a busy monitor: bounded to about a second.
 */
export async function fenceQemu(d: StopDeps): Promise<StopOutcome> {
  const { name, qemu } = d;
  const started = Date.now();
  if (qemu === undefined) return { method: 'none', ms: 0 };
  void (async () => {
    try {
      await (await d.qmp(VM_FENCE_QUIT_MS)).execute('quit', undefined, VM_FENCE_QUIT_MS);
    } catch {
      // QEMU closes the socket as it quits, or QMP is busy or dead: SIGKILL follows if needed
    }
  })();
  let method: StopOutcome['method'] = 'quit';
  if (!(await waitExited(qemu, VM_FENCE_QUIT_MS, 25))) {
    method = 'kill';
    await signalProcess(qemu, 'SIGKILL');
    if (!(await waitExited(qemu, VM_QUIT_TIMEOUT_MS, 25)))
      throw new TimeoutError(`QEMU of VM ${name} (pid ${qemu.pid}) survived SIGKILL`, `vm/${name}`);
  }
  await d.cleanup();
  return { method, ms: Date.now() - started };
}
