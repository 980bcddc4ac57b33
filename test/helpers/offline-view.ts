// A stopped VM's backup and restore views outside a driver (drivers/hypervisor/qemu/backup-daemon.ts and
// backup-offline.ts), for the storage files that test them on a real iSCSI target or NFS server: the views' deps in a
// host namespace with the real qemu-nbd, and qemu-io over one of their NBD exports.
import { startQemuNbd, stopQemuNbd } from '../../src/drivers/backup/qemu-nbd.js';
import { stopLeftDaemon } from '../../src/drivers/hypervisor/qemu/backup-daemon.js';
import type { OfflineDeps } from '../../src/drivers/hypervisor/qemu/backup-offline.js';
import type { RunResult, SystemRunner } from '../../src/exec/runner.js';

/** Deps of a view of VM `vm` whose disks are reached from `netns`; no view record is kept. */
export function offlineDepsIn(
  runner: SystemRunner,
  netns: string,
  socketDir: string,
  extra: Pick<OfflineDeps, 'keys' | 'chap'> = {},
  vm = 'bk1',
): OfflineDeps {
  return {
    vm,
    runner,
    netns,
    socketDir,
    nbd: {
      start: (o) => startQemuNbd(runner, { ...o, netns }),
      stopLeft: async (d, name) => {
        await stopQemuNbd(d, name, netns);
      },
    },
    record: { write: async () => {}, remove: async () => {} },
    ...extra,
  };
}

/** `qemu-io -c CMD` on export `name` of the NBD server at `socket` (raw; `-r` unless `writable`); never throws. */
export function nbdIo(
  runner: SystemRunner,
  socket: string,
  name: string,
  cmd: string,
  writable = false,
): Promise<RunResult> {
  return runner.run(
    ['qemu-io', ...(writable ? [] : ['-r']), '-f', 'raw', '-c', cmd, `nbd+unix:///${name}?socket=${socket}`],
    { allowFailure: true },
  );
}

/** Stops what a view left in `socketDir` (the storage daemon, the restore's qemu-nbd of export `name`). */
export async function stopOfflineViews(socketDir: string, netns: string, name = 'data'): Promise<void> {
  await stopLeftDaemon(socketDir, netns).catch(() => {});
  await stopQemuNbd(socketDir, name, netns).catch(() => {});
}
