// Stopping and fencing one VM of the QEMU driver: its QEMU stopped (vm-stop.ts) with what it leaves behind (the QMP
// connection, pidfile and cgroup) cleaned up, or fenced at once without waiting for the VM's lock.
import { rm } from 'node:fs/promises';
import { log } from '../../../shared/log.js';
import type { OpContext } from '../../network/types.js';
import { removeVmCgroup } from './cgroup.js';
import type { VmAccessors } from './vm-accessors.js';
import { fenceQemu, type StopOutcome, stopQemu } from './vm-stop.js';

/** Stops and fences the driver's VMs. */
export class VmHalt {
  constructor(
    private readonly vms: VmAccessors,
    /** The cgroup root VMs run under, if the host has one (host-probes.ts). */
    private readonly cgroupRoot: () => Promise<string | undefined>,
  ) {}

  /** Stops VM `name`'s QEMU; the caller holds the VM's lock. */
  async stopLocked(
    name: string,
    opts: { force: boolean; timeoutMs?: number },
    ctx?: OpContext,
  ): Promise<StopOutcome> {
    return stopQemu(
      {
        name,
        qemu: await this.vms.liveProcess(name),
        qmp: (timeoutMs) => this.vms.qmp(name, timeoutMs),
        cleanup: () => this.cleanupStopped(name),
        ...(ctx ? { ctx } : {}),
      },
      opts,
    );
  }

  /** After QEMU is gone: its QMP connection, pidfile and cgroup. */
  async cleanupStopped(name: string): Promise<void> {
    await this.vms.dropQmp(name);
    await rm(this.vms.paths(name).pidfile, { force: true });
    const cgroupRoot = await this.cgroupRoot();
    if (cgroupRoot) await removeVmCgroup(name, cgroupRoot).catch(() => {});
  }

  /** Kills VM `name`'s QEMU now (QMP quit, else SIGKILL); false when it was not running. */
  async kill(name: string): Promise<boolean> {
    // Not under the VM's lock: a job holding it (a snapshot, a long stop) must not delay a fence.
    const out = await fenceQemu({
      name,
      qemu: await this.vms.liveProcess(name),
      qmp: (timeoutMs) => this.vms.qmp(name, timeoutMs),
      cleanup: async () => {},
    });
    if (out.method === 'none') return false;
    log.warn({ vm: name, method: out.method, ms: out.ms }, 'VM fenced');
    // The files go under the lock, once whatever held it is done (it finds QEMU gone).
    void this.vms
      .locked(name, async () => {
        if (!(await this.vms.liveProcess(name))) await this.cleanupStopped(name);
      })
      .catch(() => {});
    return true;
  }
}
