// The wait after a VM's QEMU is spawned: until QMP reports it running. A VM with disks over QMP (encrypted, pool
// volumes, a root volume) starts paused (-S): they are attached first (disk-attach.ts), then it runs.
import { TimeoutError, VmlinkError } from '../../../shared/errors.js';
import { isRunning, type ProcessIdentity, signalProcess } from '../../../shared/process.js';
import { sleep } from '../../../shared/time.js';
import type { OpContext } from '../../network/types.js';
import type { VmPaths } from './cmdline.js';
import type { QmpClient } from './qmp.js';
import { logTail } from './vm-files.js';
import type { StoredVm } from './vm-store.js';

/** What the wait needs from its driver. */
export interface StartWaitDeps {
  name: string;
  vm: StoredVm;
  paths: VmPaths;
  /** The spawned QEMU (undefined: it was gone before it could be identified). */
  started: ProcessIdentity | undefined;
  /** Disks to attach while it is paused (none: it was not started paused). */
  disks: number;
  /** Attaches them over QMP and lets the guest run. */
  attach: (qmp: QmpClient) => Promise<void>;
  timeoutMs: number;
  qmp: (timeoutMs: number) => Promise<QmpClient>;
  /** Stops the VM at once (the driver's locked stop): a start that fails leaves nothing half-started. */
  forceStop: () => Promise<unknown>;
  ctx?: OpContext;
  /** Started with `-incoming defer`: ready once QEMU waits for the stream (`inmigrate`), its disks attached. */
  incoming?: boolean;
}

/** Waits until VM `name`'s QEMU reports `running`; on failure stops it and throws, naming the cause. */
export async function awaitVmRunning(d: StartWaitDeps): Promise<void> {
  const { name, started } = d;
  const deadline = Date.now() + d.timeoutMs;
  const giveUp = async () => {
    await d.forceStop().catch(() => {});
    if (started) await signalProcess(started, 'SIGKILL');
  };
  let attached = d.disks === 0;
  for (;;) {
    if (!started || !(await isRunning(started))) {
      throw new VmlinkError(
        'exec',
        `QEMU of VM ${name} exited while starting:\n  ${(await logTail(d.paths.qemuLog, 8)).join('\n  ')}`,
        { subject: `vm/${name}` },
      );
    }
    try {
      const qmp = await d.qmp(1000);
      const st = await qmp.execute<{ status: string }>('query-status');
      if (st.status === 'running') return;
      if (d.incoming && attached && st.status === 'inmigrate') return;
      if (!attached && (st.status === 'prelaunch' || (d.incoming && st.status === 'inmigrate'))) {
        attached = true;
        d.ctx?.progress?.(`attaching ${d.disks} disk(s) of VM ${name}`);
        try {
          await d.attach(qmp);
        } catch (e) {
          // attachDisk's errors name the VM and the disk, never a secret (those were sent as objects' data).
          await giveUp();
          if (e instanceof VmlinkError) throw e;
          throw new VmlinkError(
            'exec',
            `VM ${name}: its disks could not be attached: ${(e as Error).message}`,
            {
              subject: `vm/${name}`,
            },
          );
        }
        continue;
      }
    } catch (e) {
      if (!(e instanceof VmlinkError) || (e.kind !== 'unavailable' && e.kind !== 'timeout')) throw e;
    }
    if (Date.now() > deadline) {
      // Leave nothing half-started: a QEMU that never ran would block every later start.
      await giveUp();
      throw new TimeoutError(
        `VM ${name} (pid ${started.pid}) did not report running on QMP within ${d.timeoutMs} ms; it was stopped`,
        `vm/${name}`,
      );
    }
    await sleep(50);
  }
}
