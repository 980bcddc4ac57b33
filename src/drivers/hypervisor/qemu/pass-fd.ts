// What a running, jailed VM gains later reaches it as a descriptor root opened, passed over its fd-passing QMP
// monitor by build/vmlink-qmp-fd: a tap (NIC hot-plug, `getfd`) or a file (a hot-plugged volume, an overlay, a
// secret: `add-fd`, which QEMU opens as /dev/fdset/N). The jail never needs to show the file, nor the VM's uid
// be allowed to open it.
import type { Runner } from '../../../exec/runner.js';
import { NIC_PLUG_COMMAND_TIMEOUT_MS } from '../../../shared/limits.js';

/** How the agent reaches one VM's fd-passing monitor. */
export interface FdChannel {
  runner: Runner;
  /** build/vmlink-qmp-fd. */
  helper: string;
  /** The VM's fd-passing QMP monitor. */
  qmpFdSocket: string;
  /** Network namespace of the VM's taps. */
  netns?: string;
}

/** The lowest fd set id from 100 up that QEMU does not use yet (`query-fdsets`); ids below are vmlink's own. */
export function nextFdset(fdsets: ReadonlyArray<{ 'fdset-id': number }>): number {
  const used = new Set(fdsets.map((f) => f['fdset-id']));
  let id = 100;
  while (used.has(id)) id++;
  return id;
}

/** QEMU's path of fd set `id`. */
export const fdsetPath = (id: number): string => `/dev/fdset/${id}`;

function run(c: FdChannel, args: string[]) {
  return c.runner.run([c.helper, '--qmp', c.qmpFdSocket, ...args], {
    ...(c.netns ? { netns: c.netns } : {}),
    timeoutMs: NIC_PLUG_COMMAND_TIMEOUT_MS,
  });
}

/** Opens tap `tap` as root and hands it to QEMU named `fdname`, then runs `commands` on the same monitor. */
export async function passTap(c: FdChannel, tap: string, fdname: string, commands: string[]): Promise<void> {
  await run(c, ['--tap', tap, '--fdname', fdname, ...commands]);
}

/**
 * Opens `file` as root (never through a link; a regular file only) and adds it to QEMU's fd set `fdset`, then runs
 * `commands` on the same monitor (a failed one removes the fd set again). Returns QEMU's replies, one per line.
 */
export async function passFile(
  c: FdChannel,
  file: string,
  opts: { readOnly: boolean; fdset: number },
  commands: string[],
): Promise<string[]> {
  const r = await run(c, [
    '--file',
    file,
    opts.readOnly ? '--read-only' : '--read-write',
    '--fdset',
    String(opts.fdset),
    ...commands,
  ]);
  return r.stdout.split('\n').filter(Boolean);
}

/**
 * Adds `path` (opened by root) to a new fd set of a running VM (the lowest free id from 100), then runs
 * `commands(fdsetPath)` on the same monitor; returns the fd set's path.
 */
export async function passFileToVm(
  c: FdChannel,
  qmp: { execute<T>(command: string): Promise<T> },
  path: string,
  opts: { readOnly: boolean },
  commands: (fdsetPath: string) => Array<Record<string, unknown>>,
): Promise<string> {
  const fdset = nextFdset(await qmp.execute<Array<{ 'fdset-id': number }>>('query-fdsets'));
  await passFile(
    c,
    path,
    { readOnly: opts.readOnly, fdset },
    commands(fdsetPath(fdset)).map((x) => JSON.stringify(x)),
  );
  return fdsetPath(fdset);
}
