// One VM as it is now: its power state from pidfile and QMP, its stored config, its problems.
import { lstat } from 'node:fs/promises';
import { QMP_STATUS_TIMEOUT_MS } from '../../../shared/limits.js';
import type { ObservedVm, VmPowerState } from '../../../shared/model.js';
import { readPidfile } from '../../../shared/process.js';
import { observeVmCpu } from './cpu-pinning.js';
import { powerState } from './power-state.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

/** What observing a VM reads, from its driver. */
export interface ObserveDeps {
  stored: () => Promise<StoredVm | undefined>;
  livePid: () => Promise<number | undefined>;
  pidfile: string;
  qmp: (timeoutMs: number) => Promise<QmpClient>;
  /** The VM's cgroup directory where it has one (its `cpu.max` is reported for a quota). */
  cgroupDir?: () => Promise<string | undefined>;
}

/** VM `name` as it is now; never throws for what the VM's uid left in its run directory (it says so instead). */
export async function observeVm(name: string, d: ObserveDeps): Promise<ObservedVm> {
  const vm = await d.stored().catch(() => undefined);
  const problems: string[] = [];
  if (!vm) problems.push('config.json missing or unreadable');
  const pid = await d.livePid();
  let state: VmPowerState = 'stopped';
  if (pid === undefined) {
    const left = await readPidfile(d.pidfile);
    if (left !== undefined) {
      state = 'crashed';
      problems.push(`QEMU (pid ${left}) is gone but left its pidfile: it was killed or crashed`);
    } else if ((await lstat(d.pidfile).catch(() => undefined))?.isFile() === false) {
      // QEMU's uid owns the run directory: a link or FIFO there is refused, and said.
      problems.push(`${d.pidfile} is not a regular file: refused`);
    }
  } else {
    state = 'running';
    try {
      const st = await (await d.qmp(QMP_STATUS_TIMEOUT_MS)).execute<{ status: string }>(
        'query-status',
        undefined,
        QMP_STATUS_TIMEOUT_MS,
      );
      const seen = powerState(st.status);
      state = seen.state;
      problems.push(...seen.problems);
    } catch (e) {
      problems.push(`QMP not answering: ${(e as Error).message}`);
    }
  }
  const cpu =
    pid !== undefined && vm && (vm.config.cpu?.pin || vm.config.cpu?.quotaPercent !== undefined)
      ? await observeVmCpu(vm.config, pid, () => d.qmp(QMP_STATUS_TIMEOUT_MS), await d.cgroupDir?.()).catch(
          (e: unknown) => {
            problems.push(`vCPU pinning unreadable: ${(e as Error).message}`);
            return {};
          },
        )
      : {};
  return {
    name,
    state,
    ...(pid === undefined ? {} : { pid }),
    configHash: vm?.configHash ?? '',
    problems,
    ...(vm ? { config: vm.config } : {}),
    ...cpu,
  };
}
