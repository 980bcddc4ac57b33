// Where a VM's extra disks sit: one hot-pluggable PCIe root port per disk slot, created at boot, so that a disk can
// be plugged or unplugged later without a restart and without moving another disk. A disk keeps its slot (and so its
// QEMU ids and PCI address) for as long as the VM has it.
import { VM_DISKS_MAX, VM_NICS_MAX } from '../../../shared/limits.js';
import type { DiskConfig, VmConfig } from '../../../shared/model.js';

/** Disk slots per VM: the spec's maximum of disks. */
export const DISK_SLOTS = VM_DISKS_MAX;
/**
 * PCI slot on pcie.0 of the first eight disk root ports (functions 0-7 of one multifunction slot, as libvirt packs
 * them); slots 8-15 sit on the next PCI slot. The root disk of a VM booting from a volume gets the slot after.
 */
export const FIRST_DISK_PCI_SLOT = 0x18;
/** PCI slot of the virtio-scsi controller that CD-ROMs hang on (only in VMs that have one). */
export const SCSI_PCI_SLOT = 0x1b;
/** QEMU id of that controller; its bus is `scsi0.0`. */
export const SCSI_CONTROLLER = 'scsi0';

/** QEMU ids of one disk: its block nodes, device, root port and the secret objects that open it. */
export interface DiskIds {
  /** The format node (qcow2/raw/luks) and the device's id. */
  node: string;
  /** The protocol node (file, iscsi, nfs). */
  file: string;
  /** PCIe root port it is plugged into. */
  port: string;
  /** Secret object of its LUKS key. */
  secret: string;
  /** Secret object of its iSCSI CHAP password. */
  chap: string;
  /** QEMU fd set a passed file of this disk goes in (ids below 100 are the launcher's, 100+ `passFile`'s). */
  fdset: number;
}

/**
 * A stored slot of `ALT_SLOT + i` is slot i under its second set of node names: a disk moved while running
 * (`move-disk`, qemu/move-disk.ts) now sits on the nodes its mirror made, which QEMU cannot rename; the slot records
 * which set it uses so that everything finding a disk by its slot (backups, snapshots, unplug, the next start) agrees.
 */
export const ALT_SLOT = 100;

/** The slot (root port, PCI address) of stored slot `i`, whichever node names it uses. */
export const baseSlot = (i: number): number => i % ALT_SLOT;

/** The stored slot a disk in stored slot `i` takes when it moves: the other set of node names of the same port. */
export const otherSlot = (i: number): number => (i >= ALT_SLOT ? baseSlot(i) : ALT_SLOT + i);

/** Ids of disk slot `i` (see ALT_SLOT). */
export function diskSlotIds(i: number): DiskIds {
  const b = baseSlot(i);
  const node = i >= ALT_SLOT ? `disk${b}m` : `disk${b}`;
  return {
    node,
    file: `${node}-file`,
    port: `diskport${b}`,
    secret: `${node}-key`,
    chap: `${node}-chap`,
    fdset: (i >= ALT_SLOT ? 300 : 200) + b,
  };
}

/** Ids of the root disk of a VM that boots from a pool volume. */
export const ROOT_DISK_IDS: DiskIds = {
  node: 'root',
  file: 'root-file',
  port: 'rootport',
  secret: 'root-key',
  chap: 'root-chap',
  fdset: 199,
};

/** Chassis numbers: NIC ports have 1..8 (one per NIC slot), disk slot i has 9 + i, the root port the next. */
const diskPortChassis = (i: number) => VM_NICS_MAX + 1 + i;

/** PCI address of disk slot `i`'s root port. */
function diskPortAddr(i: number): string {
  const slot = FIRST_DISK_PCI_SLOT + Math.floor(i / 8);
  return `0x${slot.toString(16)}.${i % 8}`;
}

/** `-device` arguments of every disk slot's root port (and of the root disk's, for a VM booting from a volume). */
export function diskPortArgs(cfg: VmConfig): string[] {
  const out: string[] = [];
  for (let i = 0; i < DISK_SLOTS; i++) {
    const mf = i % 8 === 0 ? ',multifunction=on' : '';
    out.push(
      '-device',
      `pcie-root-port,id=${diskSlotIds(i).port},bus=pcie.0,chassis=${diskPortChassis(i)},addr=${diskPortAddr(i)}${mf}`,
    );
  }
  if (cfg.rootSource) {
    const slot = FIRST_DISK_PCI_SLOT + Math.ceil(DISK_SLOTS / 8);
    out.push(
      '-device',
      `pcie-root-port,id=${ROOT_DISK_IDS.port},bus=pcie.0,chassis=${diskPortChassis(DISK_SLOTS)},addr=0x${slot.toString(16)}`,
    );
  }
  if (cfg.disks.some((d) => d.media === 'cdrom'))
    out.push('-device', `virtio-scsi-pci,id=${SCSI_CONTROLLER},addr=0x${SCSI_PCI_SLOT.toString(16)}`);
  return out;
}

/**
 * Slots of `disks`: a disk (known by its name) that `prev` had keeps its slot; a new one takes the lowest free slot.
 * VMs stored before slots had disk i in slot i.
 */
export function assignDiskSlots(
  disks: readonly DiskConfig[],
  prev?: { disks: readonly DiskConfig[]; slots?: readonly number[] },
): number[] {
  const old = new Map<string, number>();
  prev?.disks.forEach((d, i) => {
    old.set(d.name, prev.slots?.[i] ?? i);
  });
  const slots = disks.map((d) => old.get(d.name));
  const used = new Set(slots.filter((s) => s !== undefined).map(baseSlot));
  let next = 0;
  return slots.map((s) => {
    if (s !== undefined) return s;
    while (used.has(next)) next++;
    if (next >= DISK_SLOTS) throw new RangeError(`a VM has at most ${DISK_SLOTS} disks`);
    used.add(next);
    return next;
  });
}

/** Whether disk `d` is attached over QMP (encrypted, from a pool, a CD-ROM) rather than on the command line. */
export function attachedOverQmp(d: DiskConfig): boolean {
  return d.encryption !== undefined || d.source !== undefined || d.media === 'cdrom';
}

/** Whether a VM's command line has the disk slots that disk hot-plug needs (VMs started before them do not). */
export function hasDiskSlots(argv: readonly string[]): boolean {
  return argv.some((a) => a.includes(`id=${diskSlotIds(DISK_SLOTS - 1).port},`));
}
