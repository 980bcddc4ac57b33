// Disk hot-plug of a running VM: which disks come and go between two configs, and bringing QEMU there over QMP
// (detach the removed, make and attach the added, grow a VM-directory disk whose size grew).
import { isDeepStrictEqual } from 'node:util';
import { InvalidStateError, UnsupportedError } from '../../../shared/errors.js';
import { VM_DISK_QMP_TIMEOUT_MS } from '../../../shared/limits.js';
import type { DiskConfig, VmConfig } from '../../../shared/model.js';
import type { OpContext } from '../../network/types.js';
import type { StorageDriver } from '../../storage/types.js';
import type { SecretValues } from '../types.js';
import type { VmPaths } from './cmdline.js';
import { attachDisk, type DiskAttachContext, detachDisk, originOf } from './disk-attach.js';
import { diskSecrets } from './disk-keys.js';
import { assignDiskSlots, diskSlotIds, hasDiskSlots, SCSI_CONTROLLER } from './disk-slots.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

const MiB = 1024 * 1024;

/** What changes between a VM's disks `from` and `to` (known by name). */
export interface DiskChanges {
  removed: DiskConfig[];
  added: DiskConfig[];
  /** VM-directory disks whose size grew: grown online. */
  grown: DiskConfig[];
}

// As stored in JSON (key order and undefined members do not count), size aside: a VM-directory disk grows here; a
// pool disk's size is its volume's business (a volume.resize step grows it, through `resizeDisk` when attached).
const plain = (d: DiskConfig): unknown => {
  const { sizeMiB: _size, ...rest } = d;
  return JSON.parse(JSON.stringify(rest));
};

/**
 * Disk changes from `from` to `to`; refuses a disk that changed otherwise (its source, encryption, media): that is
 * a detach and an attach under a new name, or a restart.
 */
export function diskChanges(vm: string, from: readonly DiskConfig[], to: readonly DiskConfig[]): DiskChanges {
  const before = new Map(from.map((d) => [d.name, d]));
  const after = new Set(to.map((d) => d.name));
  const out: DiskChanges = { removed: from.filter((d) => !after.has(d.name)), added: [], grown: [] };
  for (const d of to) {
    const was = before.get(d.name);
    if (!was) out.added.push(d);
    else if (isDeepStrictEqual(plain(was), plain(d))) {
      if (!d.source && (d.sizeMiB ?? 0) > (was.sizeMiB ?? 0)) out.grown.push(d);
      else if (!d.source && (d.sizeMiB ?? 0) < (was.sizeMiB ?? 0))
        throw new InvalidStateError(
          `VM ${vm}: disk ${d.name} cannot shrink from ${was.sizeMiB} MiB to ${d.sizeMiB} MiB`,
          `vm/${vm}`,
        );
    } else
      throw new InvalidStateError(
        `VM ${vm}: disk ${d.name} changed while the VM runs (only its size may): stop the VM, or give the disk a new name`,
        `vm/${vm}`,
      );
  }
  return out;
}

/** Whether `a` and `b` differ in their NICs and disks at most (power state aside), as read back from JSON. */
export function onlyNicsAndDisksDiffer(a: VmConfig, b: VmConfig): boolean {
  const { nics: _a, disks: _b, state: _c, ...x } = a;
  const { nics: _d, disks: _e, state: _f, ...y } = b;
  return isDeepStrictEqual(JSON.parse(JSON.stringify(x)), JSON.parse(JSON.stringify(y)));
}

/** What plugging disks needs of the driver for one running VM. */
export interface DiskPlugDeps extends Omit<DiskAttachContext, 'qmp'> {
  qmp: QmpClient;
  storage: StorageDriver;
  /** Owner of files made in the VM's directory (its own uid). */
  owner: { uid: number; gid: number };
  unplugTimeoutMs: number;
}

/**
 * Brings running VM `vm`'s disks to `cfg.disks` over QMP, and returns the slots they are in now. Nothing is
 * attached until every added disk's secrets are at hand.
 */
export async function plugDisks(
  d: DiskPlugDeps,
  vm: StoredVm,
  cfg: VmConfig,
  secrets: SecretValues | undefined,
  ctx?: OpContext,
): Promise<number[]> {
  const name = cfg.name;
  const oldSlots = vm.diskSlots ?? vm.config.disks.map((_, i) => i);
  const ch = diskChanges(name, vm.config.disks, cfg.disks);
  const slots = assignDiskSlots(cfg.disks, { disks: vm.config.disks, slots: oldSlots });
  if (ch.removed.length + ch.added.length + ch.grown.length === 0) return slots;
  if (!hasDiskSlots(vm.argv))
    throw new UnsupportedError(
      `VM ${name} was started without disk hot-plug slots (by an older vmlink): stop and start it once`,
      `vm/${name}`,
    );
  if (ch.added.some((x) => x.media === 'cdrom') && !vm.argv.some((a) => a.includes(`id=${SCSI_CONTROLLER},`)))
    throw new UnsupportedError(
      `VM ${name} has no CD-ROM controller (it was started without a CD-ROM): stop and start it to add one`,
      `vm/${name}`,
    );
  const remote = ch.added.find((x) => x.source?.kind === 'iscsi' || x.source?.kind === 'nfs');
  if (remote && !vm.hostNetwork)
    throw new UnsupportedError(
      `VM ${name}'s QEMU runs without network access (it was started without iSCSI or NFS disks), so it cannot open disk ${remote.name}: stop and start the VM to attach it`,
      `vm/${name}`,
    );
  for (const x of ch.added) diskSecrets(name, x, secrets); // refuse before anything changes
  const slotOf = (list: readonly DiskConfig[], s: readonly number[], disk: DiskConfig) =>
    s[list.indexOf(disk)] ?? list.indexOf(disk);
  for (const x of ch.removed) {
    ctx?.progress?.(`detaching disk ${x.name} of VM ${name}`);
    await detachDisk(
      d.qmp,
      name,
      x.name,
      diskSlotIds(slotOf(vm.config.disks, oldSlots, x)),
      d.unplugTimeoutMs,
    );
  }
  for (const x of ch.added) {
    const slot = slotOf(cfg.disks, slots, x);
    await makeDirDisk(d.storage, d.paths, x, d.owner, diskSecrets(name, x, secrets).keyBase64, ctx);
    ctx?.progress?.(`attaching disk ${x.name} to VM ${name}`);
    await attachDisk(d, { disk: x, origin: originOf(x, d.paths), ids: diskSlotIds(slot), slot, secrets });
  }
  for (const x of ch.grown) {
    ctx?.progress?.(`growing disk ${x.name} of VM ${name} to ${x.sizeMiB} MiB`);
    await d.qmp.execute(
      'block_resize',
      {
        'node-name': diskSlotIds(slotOf(cfg.disks, slots, x)).node,
        size: (x.sizeMiB ?? 0) * MiB,
      },
      VM_DISK_QMP_TIMEOUT_MS,
    );
  }
  return slots;
}

/**
 * Makes the qcow2 file of a VM-directory disk (at create, or before a hot-plug); a pool volume or CD-ROM has none
 * (its pool's host made it). An existing file is kept. `keyBase64` reaches qemu-img on stdin.
 */
export async function makeDirDisk(
  storage: StorageDriver,
  paths: VmPaths,
  d: DiskConfig,
  owner: { uid: number; gid: number },
  keyBase64: string | undefined,
  ctx?: OpContext,
): Promise<void> {
  if (d.source || d.media === 'cdrom') return;
  await storage.createVolume(
    {
      name: `disk-${d.name}`,
      dir: paths.vmDir,
      sizeMiB: d.sizeMiB ?? 0, // validation gives every VM-directory disk a size; 0 is refused
      owner,
      ...(keyBase64 ? { encryptionKeyBase64: keyBase64 } : {}),
    },
    ctx,
  );
}
