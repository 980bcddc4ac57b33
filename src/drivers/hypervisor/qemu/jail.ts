// What a VM's QEMU sees in its jail (native/jail.h builds it): read-only system files and images, its own
// directory read-write, a few device nodes. A pure function of the VM, so it is golden-testable.
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { QEMU_MAX_OPEN_FILES, QEMU_MAX_TASKS } from '../../../shared/limits.js';
import type { VmConfig } from '../../../shared/model.js';
import { prepareVmCgroup } from './cgroup.js';
import type { VmPaths } from './cmdline.js';
import type { VmIdentity } from './identity.js';
import { jailedLaunchArgv } from './launcher.js';

/** Device nodes every jailed QEMU gets; /dev/kvm joins them under KVM. */
export const JAIL_DEVICES = ['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom'] as const;
/** The loader cache, bound when the host has one (glibc finds QEMU's libraries without a directory search). */
export const LD_CACHE = '/etc/ld.so.cache';

/** The launcher's view of a jail: where its root is mounted, and what is bound into it. */
export interface JailSpec {
  root: string;
  readOnly: string[];
  readWrite: string[];
  devices: string[];
}

/** What `jailSpec` needs besides the VM's config and paths. */
export interface JailInput {
  config: VmConfig;
  paths: VmPaths;
  accel: 'kvm' | 'tcg';
  imagesDir: string;
  qemuBinary: string;
  /** Whether the host has `/etc/ld.so.cache`. */
  ldCache: boolean;
}

/**
 * The jail of one VM: /usr (QEMU, its block modules and firmware), the loader cache, the VM's base image or the
 * test guest's kernel read-only; the VM's directory read-write (the permissions inside decide what QEMU may write).
 */
export function jailSpec(input: JailInput): JailSpec {
  const readOnly = ['/usr'];
  if (input.ldCache) readOnly.push(LD_CACHE);
  // A QEMU installed outside /usr (operators who build their own) comes with its directory.
  if (!input.qemuBinary.startsWith('/usr/')) readOnly.push(dirname(input.qemuBinary));
  const image = input.config.image;
  // A VM booting from a pool volume gets it as a descriptor or over the network: nothing to show.
  if (image.kind === 'qcow2') readOnly.push(image.path);
  else if (image.kind === 'test-guest') readOnly.push(`${input.imagesDir}/test-guest`);
  return {
    root: input.paths.jailRoot,
    readOnly,
    readWrite: [input.paths.vmDir],
    devices: [...JAIL_DEVICES, ...(input.accel === 'kvm' ? ['/dev/kvm'] : [])],
  };
}

/** Whether a VM has a disk QEMU reaches over the network (iSCSI, NFS): its QEMU keeps the host's namespace. */
export function usesNetworkDisks(cfg: VmConfig): boolean {
  return [cfg.rootSource, ...cfg.disks.map((d) => d.source)].some(
    (s) => s?.kind === 'iscsi' || s?.kind === 'nfs',
  );
}

/** What `vmLaunchArgv` needs: the jail's input, the launcher, the VM's ids and QEMU's argv. */
export interface VmLaunchInput extends Omit<JailInput, 'ldCache'> {
  launcher: string;
  identity: VmIdentity;
  qemuArgv: readonly string[];
  /** The cgroup v2 mount, on hosts that have one: the VM gets its own cgroup there. */
  cgroupRoot?: string;
}

/** The launcher argv that starts a VM jailed: its own ids, its taps then its console log, its cgroup and limits. */
export async function vmLaunchArgv(i: VmLaunchInput): Promise<string[]> {
  const cgroup = i.cgroupRoot
    ? await prepareVmCgroup(
        i.config.name,
        {
          memoryMiB: i.config.memoryMiB,
          cpus: i.config.cpus,
          pids: QEMU_MAX_TASKS,
          ...(i.config.cpu?.quotaPercent !== undefined ? { quotaPercent: i.config.cpu.quotaPercent } : {}),
        },
        i.cgroupRoot,
      )
    : undefined;
  return jailedLaunchArgv(
    i.launcher,
    {
      identity: i.identity,
      taps: i.config.nics.map((n) => n.tap),
      appendFiles: [i.paths.consoleLog],
      jail: jailSpec({ ...i, ldCache: existsSync(LD_CACHE) }),
      ...(cgroup ? { cgroup } : {}),
      maxOpenFiles: QEMU_MAX_OPEN_FILES,
      maxTasks: QEMU_MAX_TASKS,
      ...(usesNetworkDisks(i.config) ? { hostNetwork: true } : {}),
    },
    i.qemuArgv,
  );
}
