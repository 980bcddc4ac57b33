// Locating build/vmlink-launch and the unprivileged QEMU user, and checking what that user may open.
import { accessSync, constants, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Runner } from '../../../exec/runner.js';
import { UnsupportedError } from '../../../shared/errors.js';
import type { VmIdentity } from './identity.js';
import type { JailSpec } from './jail.js';

/** Default name of the unprivileged user QEMU runs as. */
export const DEFAULT_QEMU_USER = 'vmlink-qemu';
/** Default QEMU binary (absolute: the launcher execs it without a PATH search). */
export const DEFAULT_QEMU_BINARY = '/usr/bin/qemu-system-x86_64';
/** Exit codes of vmlink-launch (before it execs QEMU), as in native/vmlink-launch.c. */
export const LAUNCH_EXIT = {
  64: 'usage',
  65: 'user lookup failed',
  66: 'tap open failed',
  67: 'descriptor setup failed',
  68: 'privilege drop failed',
  69: 'privilege check failed',
  70: 'exec of QEMU failed',
  73: 'jail or cgroup setup failed',
  74: 'resource limits failed',
} as const satisfies Record<number, string>;

/** The unprivileged user QEMU runs as: ids and groups as /etc/passwd and /etc/group say. */
export interface QemuUser {
  name: string;
  uid: number;
  gid: number;
  /** Primary and supplementary group ids (the launcher keeps exactly these). */
  groups: number[];
}

/** Path of build/vmlink-launch in this checkout. */
export function defaultLauncherPath(): string {
  // src/drivers/hypervisor/qemu/launcher.ts -> repository root
  return resolve(dirname(fileURLToPath(import.meta.url)), '../../../../build/vmlink-launch');
}

/** Throws `UnsupportedError` naming the remedy unless the launcher is built and executable. */
export function assertLauncher(path: string): void {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new UnsupportedError(
      `QEMU launcher ${path} is missing or not executable: run npm run build:native (or npm run setup)`,
    );
  }
}

/** Looks up the QEMU user through `getent` and `id -G`; `UnsupportedError` when it does not exist. */
export async function lookupQemuUser(runner: Runner, name: string): Promise<QemuUser> {
  const pw = await runner.run(['getent', 'passwd', name], { allowFailure: true });
  const fields = pw.stdout.trim().split(':');
  if (pw.code !== 0 || fields.length < 4) {
    throw new UnsupportedError(`user ${name} (QEMU runs as it) does not exist: run npm run setup`);
  }
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (uid === 0 || gid === 0)
    throw new UnsupportedError(`user ${name} has uid or gid 0; QEMU must not run as root`);
  const g = await runner.run(['id', '-G', name], { allowFailure: true });
  const groups = g.code === 0 ? g.stdout.trim().split(/\s+/).filter(Boolean).map(Number) : [gid];
  return { name, uid, gid, groups: groups.includes(gid) ? groups : [gid, ...groups] };
}

/** Whether `user` may open `path` for read (`r`), write (`w`) or traverse it (`x`), by mode bits along the whole path. */
export function userCanAccess(
  path: string,
  user: Pick<QemuUser, 'uid' | 'groups'>,
  want: 'r' | 'w' | 'rw' | 'x',
): boolean {
  const abs = resolve(path);
  const parts = abs.split('/').filter(Boolean);
  const allows = (p: string, bits: number): boolean => {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(p);
    } catch {
      return false;
    }
    const mode = Number(st.mode);
    const shift = Number(st.uid) === user.uid ? 6 : user.groups.includes(Number(st.gid)) ? 3 : 0;
    return ((mode >> shift) & bits) === bits;
  };
  for (let i = 0; i < parts.length; i++) {
    const dir = `/${parts.slice(0, i).join('/')}`;
    if (!allows(dir, 1)) return false;
  }
  const bits = (want.includes('r') ? 4 : 0) | (want.includes('w') ? 2 : 0) | (want === 'x' ? 1 : 0);
  return allows(abs, bits);
}

/** argv that runs `qemuArgv` (binary first) unprivileged as `user` with `taps` on fd 3, 4, ... */
export function launchArgv(
  launcher: string,
  user: string,
  taps: readonly string[],
  qemuArgv: readonly string[],
): string[] {
  return [launcher, '--user', user, ...taps.flatMap((t) => ['--tap', t]), '--', ...qemuArgv];
}

/** How one VM's QEMU is launched: its own ids, its taps and logs, its jail, cgroup and limits. */
export interface JailedLaunch {
  identity: VmIdentity;
  taps: readonly string[];
  /** Logs root opens for appending and hands over after the taps (QEMU: `-add-fd`). */
  appendFiles: readonly string[];
  jail: JailSpec;
  /** cgroup v2 directory QEMU joins (absent where the host has none). */
  cgroup?: string;
  maxOpenFiles: number;
  maxTasks: number;
  /**
   * Keep the network namespace QEMU is started in (a VM with iSCSI or NFS disks: QEMU's own block drivers connect
   * to the storage); otherwise it gets a new, empty one.
   */
  hostNetwork?: boolean;
}

/** argv that runs `qemuArgv` (binary first) jailed, as the VM's own uid/gid, with taps then logs on fd 3, 4, ... */
export function jailedLaunchArgv(launcher: string, l: JailedLaunch, qemuArgv: readonly string[]): string[] {
  return [
    launcher,
    '--uid',
    String(l.identity.uid),
    '--gid',
    String(l.identity.gid),
    ...l.identity.groups.flatMap((g) => ['--group', String(g)]),
    ...l.taps.flatMap((t) => ['--tap', t]),
    ...l.appendFiles.flatMap((f) => ['--append-file', f]),
    '--jail',
    l.jail.root,
    ...l.jail.readOnly.flatMap((p) => ['--bind-ro', p]),
    ...l.jail.readWrite.flatMap((p) => ['--bind-rw', p]),
    ...l.jail.devices.flatMap((d) => ['--dev', d]),
    // QEMU gets its taps as descriptors: it needs no network to reach anything, unless its disks are on the network.
    ...(l.hostNetwork ? [] : ['--private-net']),
    ...(l.cgroup ? ['--cgroup', l.cgroup] : []),
    '--nofile',
    String(l.maxOpenFiles),
    '--nproc',
    String(l.maxTasks),
    '--',
    ...qemuArgv,
  ];
}

/** Explains a launcher exit status (64-74) or returns undefined for QEMU's own. */
export function describeLaunchExit(code: number): string | undefined {
  return (LAUNCH_EXIT as Record<number, string>)[code];
}

/** Path of vmlink-qmp-fd (passes tap descriptors to a running QEMU), built beside the launcher. */
export function qmpFdHelperBeside(launcher: string): string {
  return resolve(dirname(launcher), 'vmlink-qmp-fd');
}

/** Throws `UnsupportedError` naming the remedy unless the fd helper is built and executable. */
export function assertQmpFdHelper(path: string): void {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new UnsupportedError(
      `NIC hot-plug helper ${path} is missing or not executable: run npm run build:native (or npm run setup)`,
    );
  }
}
