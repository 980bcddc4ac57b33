// The QEMU driver's reports over all its VMs (observed state, stats): the VMs are looked at side by side (files,
// /proc, QMP), so a report over many VMs waits for the slowest, not the sum; one that fails is left out.
import type { ObservedVm } from '../../../shared/model.js';
import { settleLimited } from '../../../shared/queue.js';
import type { VmStats } from '../types.js';
import { vmCgroupPath } from './cgroup.js';
import { readVmStats } from './stats.js';
import type { VmAccessors } from './vm-accessors.js';
import { observeVm } from './vm-observe.js';

/** VMs a report looks at side by side. */
const LIST_CONCURRENCY = 16;

/** Every stored VM as observed now; `cgroupRoot`: the cgroup root VMs run under, if the host has one. */
export async function listVms(
  vms: VmAccessors,
  cgroupRoot: () => Promise<string | undefined>,
): Promise<ObservedVm[]> {
  const seen = await settleLimited(await vms.names(), LIST_CONCURRENCY, (name) =>
    observeVm(name, {
      stored: () => vms.stored(name),
      livePid: () => vms.livePid(name),
      pidfile: vms.paths(name).pidfile,
      qmp: (timeoutMs) => vms.qmp(name, timeoutMs),
      cgroupDir: async () => {
        const root = await cgroupRoot();
        return root ? vmCgroupPath(name, root) : undefined;
      },
    }),
  );
  return seen.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
}

/** Counters of every running VM (CPU, memory, NICs, disks). */
export async function listVmStats(vms: VmAccessors): Promise<VmStats[]> {
  const seen = await settleLimited(await vms.names(), LIST_CONCURRENCY, (name) =>
    readVmStats(name, {
      stored: () => vms.stored(name),
      live: () => vms.liveProcess(name),
      qmp: (timeoutMs) => vms.qmp(name, timeoutMs),
    }),
  );
  return seen.flatMap((r) => (r.status === 'fulfilled' && r.value ? [r.value] : []));
}
