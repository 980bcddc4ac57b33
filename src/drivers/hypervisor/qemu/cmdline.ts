// The QEMU command line of a VM: a pure function of its config, accelerator and paths (golden-tested).

import type { NicConfig, VmConfig } from '../../../shared/model.js';
import { type ConfidentialLaunch, confidentialArgs } from './confidential-args.js';
import { attachedOverQmp, diskPortArgs, diskSlotIds } from './disk-slots.js';
import { diskSerial } from './disk-sources.js';
import { HUGEPAGES_BACKEND_ID, hugepagesArgs } from './hugepages-args.js';
import { passthroughArgs } from './passthrough-args.js';
import { memoryArg } from './tcg-ram.js';

/** Machine type. q35 and pc boot the test guest equally fast under TCG (measured); q35 is the modern one. */
export const QEMU_MACHINE = 'q35';
/** Kernel command line common to every test-guest boot. */
export const TEST_GUEST_APPEND = 'console=ttyS0 quiet panic=-1';
/** Seccomp policy: everything QEMU can deny while it already runs unprivileged. */
export const SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';
/** File descriptor of the first tap, as vmlink-launch places them. */
export const FIRST_TAP_FD = 3;
/** QEMU fdset of the console log the launcher opened (after the taps); the chardev writes to /dev/fdset/1. */
export const CONSOLE_LOG_FDSET = 1;
/** NIC slots per VM (the spec's maximum of NICs): one PCIe root port each, created at boot for hot-plug. */
export const NIC_SLOTS = 8;
/** PCI slot on pcie.0 of the root port of NIC slot 0; slot i sits at FIRST_NIC_PCI_SLOT + i. */
export const FIRST_NIC_PCI_SLOT = 0x10;

/**
 * QEMU ids of NIC slot `i`: its root port, device and netdev. A NIC keeps its slot (root port at a fixed PCI
 * address) for as long as the VM has it, so plugging or unplugging one NIC never moves another.
 */
export function nicSlot(i: number): { port: string; device: string; netdev: string; fdname: string } {
  return { port: `nicport${i}`, device: `nic${i}`, netdev: `net${i}`, fdname: `tap${i}` };
}

/**
 * Where a VM's files live. `vmDir` is root's (QEMU cannot add, remove or swap entries in it); `runDir` is the only
 * place QEMU creates files (sockets, pidfile); disks and seed belong to the VM's uid; logs are root's, handed to
 * QEMU as descriptors.
 */
export interface VmPaths {
  vmDir: string;
  runDir: string;
  /** Empty root-owned directory the launcher mounts the jail's root on (in QEMU's own mount namespace). */
  jailRoot: string;
  pidfile: string;
  qmpSocket: string;
  /** A second QMP monitor for the agent's fd helper (a descriptor passed with getfd lives in its monitor). */
  qmpFdSocket: string;
  qgaSocket: string;
  consoleSocket: string;
  /** The serial console's log, root's: the launcher opens it for appending and QEMU gets the descriptor. */
  consoleLog: string;
  /** QEMU's own stdout/stderr (and the launcher's), written by the agent. */
  qemuLog: string;
  configFile: string;
  /** qcow2 images: the copy-on-write overlay that boots. */
  rootDisk: string;
  /** qcow2 images: cloud-init NoCloud seed files and ISO. */
  seedDir: string;
  seedIso: string;
  /** Path of an extra disk. */
  disk(name: string): string;
}

/** Paths of VM `name` under `<stateDir>/vms/<name>/`. */
export function vmPaths(stateDir: string, name: string): VmPaths {
  const vmDir = `${stateDir}/vms/${name}`;
  const runDir = `${vmDir}/run`;
  return {
    vmDir,
    runDir,
    jailRoot: `${vmDir}/jail`,
    pidfile: `${runDir}/qemu.pid`,
    qmpSocket: `${runDir}/qmp.sock`,
    qmpFdSocket: `${runDir}/qmp-fd.sock`,
    qgaSocket: `${runDir}/qga.sock`,
    consoleSocket: `${runDir}/console.sock`,
    consoleLog: `${vmDir}/console.log`,
    qemuLog: `${vmDir}/qemu.log`,
    configFile: `${vmDir}/config.json`,
    rootDisk: `${vmDir}/root.qcow2`,
    seedDir: `${vmDir}/cloud-init`,
    seedIso: `${vmDir}/seed.iso`,
    disk: (d) => `${vmDir}/disk-${d}.qcow2`,
  };
}

/** Everything the command line depends on besides the VM config. */
export interface CmdlineInput {
  config: VmConfig;
  accel: 'kvm' | 'tcg';
  paths: VmPaths;
  /** Directory holding `test-guest/{vmlinuz,initrd.img}`. */
  imagesDir: string;
  /** The test guest's kernel file when not `test-guest/vmlinuz` (its PVH ELF, `testGuestKernel` in vm-image.ts). */
  testGuestKernel?: string;
  qemuBinary: string;
  /** Slot of each NIC, in `config.nics` order (see `assignNicSlots`); default: NIC i in slot i. */
  nicSlots?: readonly number[];
  /** What a confidential VM's objects need of the host (firmware, SEV C-bit); required when `config.confidential`. */
  confidential?: ConfidentialLaunch;
  /** Slot of each disk, in `config.disks` order (see `assignDiskSlots`); default: disk i in slot i. */
  diskSlots?: readonly number[];
}

/**
 * Slots of `nics`: a NIC (known by its tap) that `prev` had keeps its slot; a new one takes the lowest free slot.
 * `prev` pairs the NICs a VM had with their slots.
 */
export function assignNicSlots(
  nics: readonly NicConfig[],
  prev?: { nics: readonly NicConfig[]; slots?: readonly number[] },
): number[] {
  const old = new Map<string, number>();
  prev?.nics.forEach((n, i) => {
    old.set(n.tap, prev.slots?.[i] ?? i);
  });
  const slots = nics.map((n) => old.get(n.tap));
  const used = new Set(slots.filter((s) => s !== undefined));
  let next = 0;
  return slots.map((s) => {
    if (s !== undefined) return s;
    while (used.has(next)) next++;
    if (next >= NIC_SLOTS) throw new RangeError(`a VM has at most ${NIC_SLOTS} NICs`);
    used.add(next);
    return next;
  });
}

/** Kernel parameters that the test guest's /init reads: hostname, static addresses, MTUs. */
export function testGuestAppend(cfg: VmConfig): string {
  const parts = [TEST_GUEST_APPEND, `vmlink.hostname=${cfg.name}`];
  cfg.nics.forEach((nic, i) => {
    if (nic.staticIp) {
      const { address, prefixLength, gateway } = nic.staticIp;
      parts.push(`vmlink.ip.eth${i}=${address}/${prefixLength}${gateway ? `,${gateway}` : ''}`);
    }
    if (nic.mtu !== 1500) parts.push(`vmlink.mtu.eth${i}=${nic.mtu}`);
  });
  return parts.join(' ');
}

/** Root ports of every NIC slot, each at its own fixed address (hot-plug needs a port per device on q35). */
function nicPortArgs(): string[] {
  const out: string[] = [];
  for (let i = 0; i < NIC_SLOTS; i++) {
    const addr = (FIRST_NIC_PCI_SLOT + i).toString(16);
    out.push('-device', `pcie-root-port,id=${nicSlot(i).port},bus=pcie.0,chassis=${i + 1},addr=0x${addr}`);
  }
  return out;
}

/** `device_add` arguments of the virtio-net device of NIC `nic` in slot `i` (boot and hot-plug alike). */
export function nicDeviceProps(nic: NicConfig, i: number): Record<string, string | number> {
  const s = nicSlot(i);
  return {
    driver: 'virtio-net-pci',
    id: s.device,
    netdev: s.netdev,
    bus: s.port,
    mac: nic.mac,
    ...(nic.mtu === 1500 ? {} : { host_mtu: nic.mtu }),
  };
}

// The launcher hands taps over in NIC order (fd 3, 4, ...); the slot only names and places the device.
function nicArgs(nic: NicConfig, i: number, slot: number): string[] {
  const { driver, ...props } = nicDeviceProps(nic, slot);
  const opts = Object.entries(props).map(([k, v]) => `${k}=${v}`);
  return [
    '-netdev',
    `tap,id=${nicSlot(slot).netdev},fd=${FIRST_TAP_FD + i},vhost=off`,
    '-device',
    [driver, ...opts].join(','),
  ];
}

function diskArgs(
  node: string,
  file: string,
  opts: { format: 'qcow2' | 'raw'; readOnly?: boolean; bootindex?: number; serial?: string; bus?: string },
): string[] {
  const ro = opts.readOnly ? ',read-only=on' : '';
  return [
    '-blockdev',
    `driver=file,node-name=${node}-file,filename=${file}${ro}`,
    '-blockdev',
    `driver=${opts.format},node-name=${node},file=${node}-file${ro}`,
    '-device',
    `virtio-blk-pci,drive=${node},id=${node}${opts.bus ? `,bus=${opts.bus}` : ''}${opts.serial ? `,serial=${opts.serial}` : ''}${opts.bootindex === undefined ? '' : `,bootindex=${opts.bootindex}`}`,
  ];
}

/** Whether the VM starts paused (`-S`) so that disks are attached over QMP first: the root volume or any disk. */
export function startsPaused(cfg: VmConfig): boolean {
  return cfg.rootSource !== undefined || cfg.disks.some(attachedOverQmp);
}

/** Paths must not contain commas: QEMU's option syntax would split them. */
export function assertQemuSafePath(path: string): void {
  if (path.includes(',') || /\s/.test(path))
    throw new Error(`path ${JSON.stringify(path)} must not contain commas or spaces (QEMU options)`);
}

/** Descriptor of the console log: the launcher places it right after the NICs' taps. */
export function consoleLogFd(cfg: VmConfig): number {
  return FIRST_TAP_FD + cfg.nics.length;
}

/** The full QEMU argv (binary first) for a VM; taps are expected on fd 3, 4, ... in NIC order, then the console log. */
export function buildQemuArgv(input: CmdlineInput): string[] {
  const { config: cfg, accel, paths: p } = input;
  const cvm = cfg.confidential ? confidentialArgs(cfg.confidential, accel, input.confidential) : undefined;
  const paused = startsPaused(cfg);
  const argv = [
    input.qemuBinary,
    '-name',
    `guest=${cfg.name},debug-threads=on`,
    '-nodefaults',
    '-no-user-config',
    '-machine',
    `${QEMU_MACHINE},accel=${accel}${cvm?.machine ?? ''}${cfg.hugepages ? `,memory-backend=${HUGEPAGES_BACKEND_ID}` : ''}`,
    ...(cvm?.args ?? []),
    // Disks over QMP (encrypted, from pools) need keys or descriptors first, and neither goes on the command line:
    // start paused, attach them over QMP, then run (disk-attach.ts).
    ...(paused ? ['-S'] : []),
    '-cpu',
    accel === 'kvm' ? 'host' : 'max',
    '-smp',
    String(cfg.cpus),
    '-m',
    memoryArg(cfg.memoryMiB, accel, cfg.hugepages === true),
    ...(cfg.hugepages ? hugepagesArgs(cfg.memoryMiB) : []),
    '-display',
    'none',
    '-vga',
    'none',
    '-sandbox',
    SANDBOX,
    '-pidfile',
    p.pidfile,
    '-qmp',
    `unix:${p.qmpSocket},server=on,wait=off`,
    '-qmp',
    `unix:${p.qmpFdSocket},server=on,wait=off`,
    // QEMU cannot open, replace or grow beyond the agent's cap a log it only holds a descriptor of.
    '-add-fd',
    `fd=${consoleLogFd(cfg)},set=${CONSOLE_LOG_FDSET}`,
    '-chardev',
    `socket,id=serial0,path=${p.consoleSocket},server=on,wait=off,logfile=/dev/fdset/${CONSOLE_LOG_FDSET},logappend=on`,
    '-serial',
    'chardev:serial0',
    '-device',
    'virtio-serial-pci',
    '-chardev',
    `socket,id=qga0,path=${p.qgaSocket},server=on,wait=off`,
    '-device',
    'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
  ];
  argv.push(...nicPortArgs());
  cfg.nics.forEach((nic, i) => {
    argv.push(...nicArgs(nic, i, input.nicSlots?.[i] ?? i));
  });
  if (cfg.image.kind === 'qcow2') {
    argv.push(...diskArgs('root', p.rootDisk, { format: 'qcow2', bootindex: 0 }));
  }
  argv.push(...diskPortArgs(cfg));
  for (const [i, d] of cfg.disks.entries()) {
    if (attachedOverQmp(d)) continue; // plugged into its slot's port at start (disk-attach.ts)
    const ids = diskSlotIds(input.diskSlots?.[i] ?? i);
    argv.push(
      ...diskArgs(ids.node, p.disk(d.name), {
        format: 'qcow2',
        serial: diskSerial(d.name),
        bus: ids.port,
        ...(d.readOnly ? { readOnly: true } : {}),
      }),
    );
  }
  argv.push(...passthroughArgs(cfg.devices ?? []));
  if (cfg.image.kind === 'qcow2') {
    argv.push(...diskArgs('seed', p.seedIso, { format: 'raw', readOnly: true }));
  } else if (cfg.image.kind === 'test-guest') {
    const dir = `${input.imagesDir}/test-guest`;
    argv.push(
      '-kernel',
      input.testGuestKernel ?? `${dir}/vmlinuz`,
      '-initrd',
      `${dir}/initrd.img`,
      '-append',
      testGuestAppend(cfg),
    );
  }
  return argv;
}
