// The wait after a VM's QEMU is spawned: until QMP reports it running. A VM with encrypted disks starts paused
// (-S): its keys and disks are added over QMP first (disk-keys.ts), then it runs.
import { TimeoutError, VmlinkError } from '../../../shared/errors.js';
import { isRunning, type ProcessIdentity, signalProcess } from '../../../shared/process.js';
import { sleep } from '../../../shared/time.js';
import type { OpContext } from '../../network/types.js';
import type { VmPaths } from './cmdline.js';
import { attachEncryptedDisks } from './disk-keys.js';
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
  /** Disk index -> base64 key of the VM's encrypted disks. */
  keys: Map<number, string>;
  timeoutMs: number;
  qmp: (timeoutMs: number) => Promise<QmpClient>;
  /** Stops the VM at once (the driver's locked stop): a start that fails leaves nothing half-started. */
  forceStop: () => Promise<unknown>;
  ctx?: OpContext;
}

/** Waits until VM `name`'s QEMU reports `running`; on failure stops it and throws, naming the cause. */
export async function awaitVmRunning(d: StartWaitDeps): Promise<void> {
  const { name, started, keys } = d;
  const deadline = Date.now() + d.timeoutMs;
  const giveUp = async () => {
    await d.forceStop().catch(() => {});
    if (started) await signalProcess(started, 'SIGKILL');
  };
  let attached = keys.size === 0;
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
      if (!attached && st.status === 'prelaunch') {
        attached = true;
        d.ctx?.progress?.(`attaching ${keys.size} encrypted disk(s) of VM ${name}`);
        try {
          await attachEncryptedDisks(qmp, d.vm.config, d.paths, keys);
        } catch (e) {
          // QEMU's errors name the disk, never the key (it was sent as a secret object's data).
          await giveUp();
          throw new VmlinkError(
            'exec',
            `VM ${name}: its encrypted disks could not be attached: ${(e as Error).message}`,
            { subject: `vm/${name}` },
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
