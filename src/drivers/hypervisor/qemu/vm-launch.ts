// Starting a created VM's QEMU: secrets and disks checked, its directory brought to today's layout, the jailed launch
// through build/vmlink-launch, then the wait until it runs (vm-start.ts) and its vCPUs pinned. Split out of driver.ts.
import { rm } from 'node:fs/promises';
import type { Runner } from '../../../exec/runner.js';
import { InvalidStateError } from '../../../shared/errors.js';
import { identify } from '../../../shared/process.js';
import type { OpContext } from '../../network/types.js';
import type { SecretValues } from '../types.js';
import { CGROUP_ROOT } from './cgroup.js';
import { checkVmResources, pinStartedVm, probeHostResources } from './cpu-pinning.js';
import { attachDisksAtStart, disksAtStart } from './disk-attach.js';
import { diskSecrets } from './disk-keys.js';
import { usesNetworkDisks, vmLaunchArgv } from './jail.js';
import { assertLauncher, assertQmpFdHelper } from './launcher.js';
import { INCOMING_ARGS } from './migrate-vm.js';
import type { ArgvBuilder, VmAccess } from './vm-access.js';
import { ownVmFiles, prepareVmDirs } from './vm-files.js';
import { awaitVmRunning } from './vm-start.js';
import { asStarted } from './vm-store.js';

/** What a launch needs from its driver (called under the VM's lock). */
export interface LaunchDeps {
  vms: VmAccess;
  runner: Runner;
  netns?: string;
  launcher: string;
  qmpFdHelper: string;
  imagesDir: string;
  qemuBinary: string;
  startTimeoutMs: number;
  argvOf: ArgvBuilder;
  rotateLogs: (name: string) => Promise<unknown>;
  cgroupRoot: () => Promise<string | undefined>;
  watchLogs: () => void;
  /** The driver's stop without its lock (the launch holds it). */
  forceStop: (name: string) => Promise<unknown>;
}

/** Starts created VM `name`; `incoming`: paused, waiting for a live migration's stream (`-incoming defer`). */
export async function launchVm(
  d: LaunchDeps,
  name: string,
  ctx: OpContext | undefined,
  secrets: SecretValues | undefined,
  incoming: boolean,
): Promise<void> {
  const vms = d.vms;
  const vm = await vms.mustStored(name);
  if ((await vms.livePid(name)) !== undefined)
    throw new InvalidStateError(`start requires stopped: VM ${name} is running`, `vm/${name}`);
  const p = vms.paths(name);
  // Every disk's secrets are at hand before QEMU runs (a refusal names the disk and the secret).
  const attach = disksAtStart(vm.config, p, vm.diskSlots, secrets);
  for (const t of attach) diskSecrets(name, t.disk, secrets);
  if (attach.some((t) => t.disk.source?.kind === 'file')) assertQmpFdHelper(d.qmpFdHelper);
  assertLauncher(d.launcher);
  const id = await vms.identity(name);
  // VMs created before per-VM identities (or by an older vmlink) are brought to today's layout here.
  await prepareVmDirs(p, id);
  await ownVmFiles(p, vm.config, id);
  const qemuArgv = await d.argvOf(vm.config, vm.accel, vm.nicSlots, vm.diskSlots);
  const next = asStarted(vm, qemuArgv, usesNetworkDisks(vm.config));
  if (JSON.stringify(next) !== JSON.stringify(vm)) await vms.writeStored(name, next);
  await vms.dropQmp(name);
  // Unlinking in the run directory never follows a link: only the last component is QEMU's.
  for (const f of [p.pidfile, p.qmpSocket, p.qmpFdSocket, p.qgaSocket, p.consoleSocket])
    await rm(f, { force: true });
  await d.rotateLogs(name);
  const cgroupRoot = await d.cgroupRoot();
  // Pinning, quota and huge pages the host cannot honour refuse the start before anything runs.
  if (vm.config.cpu || vm.config.hugepages)
    checkVmResources(vm.config, await probeHostResources(cgroupRoot, CGROUP_ROOT), 'this host');
  const argv = await vmLaunchArgv({
    launcher: d.launcher,
    identity: id,
    config: vm.config,
    paths: p,
    accel: vm.accel,
    imagesDir: d.imagesDir,
    qemuBinary: d.qemuBinary,
    // The stored argv stays the plain one: a migrated-in VM restarts like any other.
    qemuArgv: incoming ? [...qemuArgv, ...INCOMING_ARGS] : qemuArgv,
    ...(cgroupRoot ? { cgroupRoot } : {}),
  });
  d.watchLogs();
  ctx?.progress?.(`starting VM ${name}`);
  const pid = await d.runner.spawnDetached(argv, {
    ...(d.netns ? { netns: d.netns } : {}),
    logFile: p.qemuLog,
    cwd: p.runDir,
  });
  // `ip netns exec` and the launcher exec into QEMU: the pid and its start time stay, the command line changes.
  await awaitVmRunning({
    name,
    vm,
    paths: p,
    started: await identify(pid),
    disks: attach.length,
    attach: (qmp) =>
      attachDisksAtStart({ vm: name, qmp, fdChannel: vms.fdChannel(name), paths: p }, attach, { incoming }),
    timeoutMs: d.startTimeoutMs,
    qmp: (timeoutMs) => vms.qmp(name, timeoutMs),
    forceStop: () => d.forceStop(name),
    ...(ctx ? { ctx } : {}),
    ...(incoming ? { incoming } : {}),
  });
  // A VM whose pinning fails does not run unpinned: it is stopped and the start fails.
  await pinStartedVm(d.runner, vm.config, pid, () => vms.qmp(name)).catch(async (e: unknown) => {
    await d.forceStop(name).catch(() => {});
    throw e;
  });
}
