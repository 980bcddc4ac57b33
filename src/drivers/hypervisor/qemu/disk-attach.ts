// Attaching and detaching a VM's disks over QMP: at a paused start (encrypted disks, pool volumes, CD-ROMs, the
// root volume) and for hot-plug. Secrets go over the agent's own monitor as secret objects; a pool's file reaches
// the jailed QEMU as a descriptor root opened (pass-fd.ts), never by a path its jail would have to show.
import { TimeoutError, VmlinkError } from '../../../shared/errors.js';
import { LUKS_OPEN_TIMEOUT_MS, VM_DISK_QMP_TIMEOUT_MS } from '../../../shared/limits.js';
import type { DiskConfig, VmConfig } from '../../../shared/model.js';
import type { SecretValues } from '../types.js';
import type { VmPaths } from './cmdline.js';
import { diskSecrets } from './disk-keys.js';
import { attachedOverQmp, type DiskIds, diskSlotIds, ROOT_DISK_IDS } from './disk-slots.js';
import {
  type DiskOrigin,
  diskAttachCommands,
  diskCleanupCommands,
  type QmpCommand,
  redactUrlCredentials,
} from './disk-sources.js';
import { type FdChannel, passFile } from './pass-fd.js';
import type { QmpClient } from './qmp.js';

/** What attaching needs of one running (or paused) VM. */
export interface DiskAttachContext {
  vm: string;
  qmp: Pick<QmpClient, 'execute'>;
  fdChannel: FdChannel;
  paths: VmPaths;
}

/** Where disk `d` of a VM comes from: its pool volume, or its qcow2 file in the VM's directory. */
export function originOf(d: DiskConfig, paths: VmPaths): DiskOrigin {
  return d.source
    ? { kind: 'source', source: d.source }
    : { kind: 'path', path: paths.disk(d.name), format: 'qcow2' };
}

/** A disk to attach: its config, ids, and what opens it. */
export interface DiskToAttach {
  disk: DiskConfig;
  origin: DiskOrigin;
  ids: DiskIds;
  slot?: number;
  bootindex?: number;
  secrets: SecretValues | undefined;
}

/**
 * Opens and plugs in one disk. A failure removes what was made (nodes, secret objects, fd set) and says which disk
 * failed with QEMU's reason (which names nodes and ids, never a secret's value: those travel as object data).
 */
export async function attachDisk(
  c: DiskAttachContext,
  t: DiskToAttach,
  opts: { keepSecrets?: boolean } = {},
): Promise<void> {
  const s = diskSecrets(c.vm, t.disk, t.secrets);
  const cmds = diskAttachCommands({
    disk: t.disk,
    origin: t.origin,
    ids: t.ids,
    ...(t.slot === undefined ? {} : { scsiId: t.slot }),
    ...(t.bootindex === undefined ? {} : { bootindex: t.bootindex }),
    ...s,
  });
  const run = (x: QmpCommand) => c.qmp.execute(x.execute, x.arguments, LUKS_OPEN_TIMEOUT_MS);
  try {
    for (const x of cmds.secrets) await run(x);
    if (cmds.passFile) {
      // A set left by an attach that failed half-way would refuse the new descriptor.
      await c.qmp.execute('remove-fd', { 'fdset-id': t.ids.fdset }).catch(() => {});
      await passFile(c.fdChannel, cmds.passFile.path, { ...cmds.passFile, fdset: t.ids.fdset }, [
        JSON.stringify(cmds.protocol),
      ]);
    } else await run(cmds.protocol);
    for (const x of cmds.rest) if (!(opts.keepSecrets && x.execute === 'object-del')) await run(x);
  } catch (e) {
    await cleanupDisk(c.qmp, t.ids);
    throw new VmlinkError(
      'exec',
      `VM ${c.vm}: disk ${t.disk.name} could not be attached: ${redactUrlCredentials((e as Error).message)}`,
      { subject: `vm/${c.vm}` },
    );
  }
}

/** Removes a disk's nodes, secret objects and fd set, whichever exist (its device must be gone). */
export async function cleanupDisk(qmp: Pick<QmpClient, 'execute'>, ids: DiskIds): Promise<void> {
  for (const x of diskCleanupCommands(ids))
    await qmp.execute(x.execute, x.arguments, VM_DISK_QMP_TIMEOUT_MS).catch(() => {});
}

/**
 * Unplugs a disk: `device_del`, then waits for DEVICE_DELETED (a virtio-blk device needs the guest to let go of
 * it, through PCIe hot-plug in its kernel), then removes its nodes. A disk without a device only loses its nodes.
 */
export async function detachDisk(
  qmp: QmpClient,
  vm: string,
  disk: string,
  ids: DiskIds,
  timeoutMs: number,
): Promise<void> {
  const present = await qmp
    .execute<Array<{ name: string }>>('qom-list', { path: '/machine/peripheral' }, VM_DISK_QMP_TIMEOUT_MS)
    .then((items) => items.some((i) => i.name === ids.node));
  if (present) {
    // Listen before asking: the event may come before device_del returns.
    const deleted = waitDeleted(qmp, ids.node, timeoutMs, vm, disk);
    deleted.catch(() => {});
    await qmp.execute('device_del', { id: ids.node }, VM_DISK_QMP_TIMEOUT_MS);
    await deleted;
  }
  await cleanupDisk(qmp, ids);
}

function waitDeleted(
  qmp: QmpClient,
  device: string,
  timeoutMs: number,
  vm: string,
  disk: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(
        new TimeoutError(
          `VM ${vm}: disk ${disk} was not released by the guest within ${timeoutMs} ms (no DEVICE_DELETED): is it mounted, or does the guest's kernel lack PCIe hot-plug?`,
          `vm/${vm}`,
        ),
      );
    }, timeoutMs);
    const off = qmp.onEvent((e) => {
      if (e.event === 'DEVICE_DELETED' && e.data?.device === device) {
        clearTimeout(timer);
        off();
        resolve();
      }
    });
  });
}

/** The disks a VM attaches over QMP while paused at start, in order: its root volume first (boot index 0). */
export function disksAtStart(
  cfg: VmConfig,
  paths: VmPaths,
  diskSlots: readonly number[] | undefined,
  secrets: SecretValues | undefined,
): DiskToAttach[] {
  const out: DiskToAttach[] = [];
  if (cfg.rootSource)
    out.push({
      disk: { name: 'root', source: cfg.rootSource },
      origin: { kind: 'source', source: cfg.rootSource },
      ids: ROOT_DISK_IDS,
      bootindex: 0,
      secrets,
    });
  cfg.disks.forEach((d, i) => {
    if (!attachedOverQmp(d)) return;
    const slot = diskSlots?.[i] ?? i;
    out.push({ disk: d, origin: originOf(d, paths), ids: diskSlotIds(slot), slot, secrets });
  });
  return out;
}

/**
 * Attaches every QMP disk of a VM started paused (`-S`, status `prelaunch`), then lets it run. A root volume added
 * now is not in the firmware's boot order yet: a reset (still paused) rebuilds it.
 */
export async function attachDisksAtStart(
  c: DiskAttachContext,
  disks: readonly DiskToAttach[],
  opts: { incoming?: boolean } = {},
): Promise<void> {
  // An incoming VM's nodes are opened inactive and activated later (by a block migration's NBD export, and when the
  // state has arrived), and activating a LUKS node opens it again, with its key: its secret objects stay until the
  // guest runs here (`dropSecrets`).
  for (const t of disks) await attachDisk(c, t, { keepSecrets: opts.incoming === true });
  // An incoming migration's guest gets its state (boot order included) from the source, and runs on its go.
  if (opts.incoming) return;
  if (disks.some((t) => t.bootindex !== undefined)) await c.qmp.execute('system_reset');
  await c.qmp.execute('cont');
}

/**
 * Deletes every secret object of a VM's QEMU (an incoming VM keeps its disks' keys until it runs: `attachDisksAtStart`).
 * QEMU 7.2 answers `qom-get` of a secret's data, so none stays longer than the nodes need it.
 */
export async function dropSecrets(qmp: Pick<QmpClient, 'execute'>): Promise<void> {
  const objects = await qmp.execute<Array<{ name: string; type: string }>>('qom-list', { path: '/objects' });
  for (const o of Array.isArray(objects) ? objects : [])
    if (o.type === 'child<secret>') await qmp.execute('object-del', { id: o.name }).catch(() => {});
}
