// The host's PCI and USB devices as sysfs shows them (Documentation/ABI/testing/sysfs-bus-pci, sysfs-bus-usb,
// sysfs-kernel-iommu_groups): read-only, bounded in devices, entries and bytes, and never led outside `sysRoot` by a
// link (each is read with readlink, resolved and checked; attribute files are opened without following links).
import type { Dir } from 'node:fs';
import { opendir, readlink, realpath } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import {
  DEVICE_TEXT_MAX,
  type DeviceInventory,
  HOST_USE_MAX,
  MDEV_TYPES_MAX,
  PCI_ADDRESS_PATTERN,
  PCI_DEVICES_MAX,
  type PciDevice,
  USB_DEVICES_MAX,
  type UsbDevice,
} from '../../shared/devices.js';
import { readFileCapped } from '../../shared/state-file.js';
import { className, deviceNames, type PciIds } from './pci-ids.js';

/** Largest sysfs attribute read (sysfs serves at most a page). */
const ATTR_MAX_BYTES = 4096;
/** Most entries looked at in one device directory (a PF with many VFs has one `virtfnN` link each). */
const DIR_ENTRIES_MAX = 4096;
/** How deep and how wide the walk from a host-needed device to what it sits on goes (dm over md over a disk...). */
const HOST_NEED_DEPTH = 4;
const HOST_NEED_NODES = 64;
/** Devices read at once. */
const PARALLEL = 16;

/** A USB device (not a root hub `usbN`, not an interface `1-2:1.0`): `bus-port[.port...]`. */
const USB_PATH = /^[1-9]\d{0,2}-\d{1,3}(\.\d{1,3}){0,6}$/;
const DRIVER_NAME = /^[\w.+-]{1,64}$/;
const MDEV_TYPE = /^[\w.:+-]{1,64}$/;
/** A block device (`nvme0n1p2`, `dm-0`) or `major:minor` as /proc/self/mountinfo gives it; a NIC name. */
const DEV_NAME = /^[\w.:@-]{1,64}$/;

/** A device the host itself runs on: a block device (holding `/` or `/boot`) or a NIC (uplink, management). */
export interface HostNeed {
  kind: 'block' | 'net';
  /** Name in /sys/class/block or /sys/class/net, or (block) `major:minor` as in /sys/dev/block. */
  name: string;
  /** What it is to the host, shown to operators: `boot disk vda (/)`, `uplink eth0`. */
  why: string;
}

export interface ReadInventoryOptions {
  /** Where sysfs is mounted (tests: a tree written into a temporary directory). */
  sysRoot?: string;
  /** Names from pci.ids (see `loadPciIds`); without it devices carry numbers only. */
  pciIds?: PciIds;
  /** Devices the host needs: their PCI functions and USB devices, and the bridges and hubs above, get `hostUse`. */
  hostNeeds?: readonly HostNeed[];
}

/** Reads the host's PCI functions, USB devices and IOMMU state from sysfs. */
export async function readDeviceInventory(opts: ReadInventoryOptions = {}): Promise<DeviceInventory> {
  const root = await realpath(opts.sysRoot ?? '/sys');
  const fs = new SysTree(root);
  const [iommu, pci, usb, hostUse] = await Promise.all([
    fs.hasEntries(`${root}/kernel/iommu_groups`),
    readPci(fs, opts.pciIds),
    readUsb(fs),
    hostUseOf(fs, opts.hostNeeds ?? []),
  ]);
  for (const d of pci) {
    const why = hostUse.get(d.address);
    if (why) d.hostUse = why;
  }
  for (const u of usb) {
    const why = hostUse.get(u.path);
    if (why) u.hostUse = why;
  }
  return { iommu, pci, usb };
}

/** Reads of one sysfs tree that stay inside it. */
class SysTree {
  constructor(readonly root: string) {}

  /** Whether `p` is `root` or below it. */
  inside(p: string): boolean {
    return p === this.root || p.startsWith(`${this.root}/`);
  }

  /**
   * Where link `p` points, resolved against its directory (sysfs links are relative and the directories they sit
   * in are real ones); undefined when `p` is no link, is missing, or points outside the tree.
   */
  async link(p: string): Promise<string | undefined> {
    let target: string;
    try {
      target = await readlink(p);
    } catch {
      return undefined;
    }
    const abs = resolve(dirname(p), target);
    return this.inside(abs) ? abs : undefined;
  }

  /** The trimmed text of attribute `p` (a regular file, not followed if a link); undefined if unreadable. */
  async attr(p: string): Promise<string | undefined> {
    try {
      return (await readFileCapped(p, { maxBytes: ATTR_MAX_BYTES }))?.trim();
    } catch {
      // EACCES, EIO (some attributes fail on some devices), a link: treated as absent.
      return undefined;
    }
  }

  async int(p: string): Promise<number | undefined> {
    const s = await this.attr(p);
    return s !== undefined && /^-?\d{1,9}$/.test(s) ? Number(s) : undefined;
  }

  /** A count (VFs, instances, bus and device numbers): 0 to 65535, else undefined. */
  async count(p: string): Promise<number | undefined> {
    const n = await this.int(p);
    return n !== undefined && n >= 0 && n <= 65_535 ? n : undefined;
  }

  /** Up to `max` entry names of directory `p` (none if it is missing). */
  async names(p: string, max: number): Promise<string[]> {
    let dir: Dir;
    try {
      dir = await opendir(p);
    } catch {
      return [];
    }
    const out: string[] = [];
    try {
      for await (const e of dir) {
        out.push(e.name);
        if (out.length >= max) break;
      }
    } finally {
      await dir.close().catch(() => undefined);
    }
    return out;
  }

  async hasEntries(p: string): Promise<boolean> {
    return (await this.names(p, 1)).length > 0;
  }
}

/** Four lower-case hex digits from `0x10de` (PCI) or `10de` (USB); undefined if it is not that. */
function hex(s: string | undefined, digits: number): string | undefined {
  const v = s?.toLowerCase().replace(/^0x/, '');
  return v !== undefined && v.length === digits && /^[0-9a-f]+$/.test(v) ? v : undefined;
}

/** Runs `fn` over `items`, `PARALLEL` at a time, keeping order. */
async function mapLimited<T, R>(items: readonly T[], fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, worker));
  return out;
}

const byAddress = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

async function readPci(fs: SysTree, ids: PciIds | undefined): Promise<PciDevice[]> {
  const dir = `${fs.root}/bus/pci/devices`;
  const names = (await fs.names(dir, PCI_DEVICES_MAX))
    .filter((n) => PCI_ADDRESS_PATTERN.test(n))
    .sort(byAddress);
  const devices = await mapLimited(names, (n) => readPciDevice(fs, `${dir}/${n}`, n, ids));
  return devices.filter((d): d is PciDevice => d !== undefined);
}

async function readPciDevice(
  fs: SysTree,
  entry: string,
  address: string,
  ids: PciIds | undefined,
): Promise<PciDevice | undefined> {
  const dir = await fs.link(entry);
  // A function whose link leaves the tree, or whose identity is unreadable, is not listed.
  if (!dir || basename(dir) !== address) return undefined;
  // One listing of the directory, so that only attributes and links it has are read (most functions have no
  // SR-IOV, mdev or physfn entries; a missing one would cost a failed open each).
  const has = new Set(await fs.names(dir, DIR_ENTRIES_MAX));
  const maybe = <T>(name: string, read: (p: string) => Promise<T | undefined>) =>
    has.has(name) ? read(`${dir}/${name}`) : Promise.resolve(undefined);
  const [vendor, device, klass, driver, group, numa, totalVfs, numVfs, physfn] = await Promise.all([
    fs.attr(`${dir}/vendor`),
    fs.attr(`${dir}/device`),
    fs.attr(`${dir}/class`),
    maybe('driver', (p) => fs.link(p)),
    maybe('iommu_group', (p) => fs.link(p)),
    maybe('numa_node', (p) => fs.int(p)),
    maybe('sriov_totalvfs', (p) => fs.count(p)),
    maybe('sriov_numvfs', (p) => fs.count(p)),
    maybe('physfn', (p) => fs.link(p)),
  ]);
  const vendorId = hex(vendor, 4);
  const deviceId = hex(device, 4);
  const classCode = hex(klass, 6);
  if (!vendorId || !deviceId || !classCode) return undefined;
  const d: PciDevice = {
    address,
    vendorId,
    deviceId,
    ...deviceNames(ids, vendorId, deviceId),
    classCode,
  };
  const cls = className(ids, classCode);
  if (cls) d.className = cls;
  const drv = driver && basename(driver);
  if (drv && DRIVER_NAME.test(drv)) d.driver = drv;
  const g = group && basename(group);
  if (g && /^\d{1,6}$/.test(g)) d.iommuGroup = Number(g);
  if (numa !== undefined && numa >= 0 && numa <= 4096) d.numaNode = numa;
  if (totalVfs !== undefined && totalVfs > 0)
    d.sriov = { totalVfs, numVfs: numVfs ?? 0, vfs: await virtfns(fs, dir, has) };
  const pf = physfn && basename(physfn);
  if (pf && PCI_ADDRESS_PATTERN.test(pf)) d.physfn = pf;
  const mdev = has.has('mdev_supported_types') ? await mdevTypes(fs, dir) : [];
  if (mdev.length) d.mdevTypes = mdev;
  return d;
}

/** Addresses of a PF's VFs, in VF order (`virtfn0`, `virtfn1`, ...). */
async function virtfns(fs: SysTree, dir: string, entries: ReadonlySet<string>): Promise<string[]> {
  const links = [...entries]
    .map((n) => /^virtfn(\d{1,5})$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(a[1]) - Number(b[1]));
  const out: string[] = [];
  for (const m of links) {
    const t = await fs.link(`${dir}/${m[0]}`);
    const a = t && basename(t);
    if (a && PCI_ADDRESS_PATTERN.test(a)) out.push(a);
  }
  return out;
}

/** Mediated device types (vGPU profiles and the like) a function offers. */
async function mdevTypes(fs: SysTree, dir: string): Promise<NonNullable<PciDevice['mdevTypes']>> {
  const base = `${dir}/mdev_supported_types`;
  const types = (await fs.names(base, MDEV_TYPES_MAX)).filter((t) => MDEV_TYPE.test(t)).sort();
  return Promise.all(
    types.map(async (id) => {
      const [name, available] = await Promise.all([
        fs.attr(`${base}/${id}/name`),
        fs.count(`${base}/${id}/available_instances`),
      ]);
      const clean = name && printable(name);
      return { id, ...(clean ? { name: clean } : {}), available: available ?? 0 };
    }),
  );
}

/** Text from a device's descriptor, shown to operators: printable characters only, clipped. */
function printable(s: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').slice(0, DEVICE_TEXT_MAX);
}

async function readUsb(fs: SysTree): Promise<UsbDevice[]> {
  const dir = `${fs.root}/bus/usb/devices`;
  // Interfaces (`1-2:1.0`) and root hubs (`usb1`) are skipped: only devices can be passed through.
  const names = (await fs.names(dir, DIR_ENTRIES_MAX)).filter((n) => USB_PATH.test(n)).sort(byUsbPath);
  const devices = await mapLimited(names.slice(0, USB_DEVICES_MAX), (n) => readUsbDevice(fs, dir, n));
  return devices.filter((d): d is UsbDevice => d !== undefined);
}

function byUsbPath(a: string, b: string): number {
  const key = (s: string) => s.split(/[-.]/).map(Number);
  const [ka, kb] = [key(a), key(b)];
  for (let i = 0; i < Math.max(ka.length, kb.length); i++) {
    const d = (ka[i] ?? -1) - (kb[i] ?? -1);
    if (d !== 0) return d;
  }
  return 0;
}

async function readUsbDevice(fs: SysTree, parent: string, path: string): Promise<UsbDevice | undefined> {
  const dir = await fs.link(`${parent}/${path}`);
  if (!dir || basename(dir) !== path) return undefined;
  const [vendor, product, busnum, devnum, manufacturer, productName] = await Promise.all([
    fs.attr(`${dir}/idVendor`),
    fs.attr(`${dir}/idProduct`),
    fs.count(`${dir}/busnum`),
    fs.count(`${dir}/devnum`),
    fs.attr(`${dir}/manufacturer`),
    fs.attr(`${dir}/product`),
  ]);
  const vendorId = hex(vendor, 4);
  const productId = hex(product, 4);
  if (!vendorId || !productId || busnum === undefined || devnum === undefined) return undefined;
  const m = manufacturer && printable(manufacturer);
  const p = productName && printable(productName);
  return {
    path,
    busnum,
    devnum,
    vendorId,
    productId,
    ...(m ? { manufacturer: m } : {}),
    ...(p ? { product: p } : {}),
  };
}

/**
 * PCI functions and USB devices the host needs, each with why: those in the sysfs path of each needed block device
 * or NIC (its controller and the bridges above it; a USB disk and the hubs above it), and those under what it is
 * built on (a dm or md device's `slaves/`,
 * a bond's or VLAN's `lower_*`, a bridge's `brif/`).
 */
async function hostUseOf(fs: SysTree, needs: readonly HostNeed[]): Promise<Map<string, string>> {
  const uses = new Map<string, string[]>();
  const mark = (address: string, why: string) => {
    const list = uses.get(address) ?? [];
    if (!list.includes(why)) list.push(why);
    uses.set(address, list);
  };
  for (const need of needs) {
    if (!DEV_NAME.test(need.name)) continue;
    const entry =
      need.kind === 'net'
        ? `${fs.root}/class/net/${need.name}`
        : /^\d+:\d+$/.test(need.name)
          ? `${fs.root}/dev/block/${need.name}`
          : `${fs.root}/class/block/${need.name}`;
    const start = await fs.link(entry);
    if (!start) continue;
    const seen = new Set<string>();
    let level = [start];
    for (let depth = 0; depth < HOST_NEED_DEPTH && level.length && seen.size < HOST_NEED_NODES; depth++) {
      const below: string[] = [];
      for (const dir of level) {
        if (seen.has(dir) || seen.size >= HOST_NEED_NODES) continue;
        seen.add(dir);
        const parts = dir.slice(fs.root.length).split('/');
        // PCI functions by address and USB devices by path: the two never look alike.
        const pciPath = parts.filter((c) => PCI_ADDRESS_PATTERN.test(c));
        pciPath.forEach((a, i) => {
          mark(a, i === pciPath.length - 1 ? need.why : `bridge to ${need.why}`);
        });
        const usbPath = parts.filter((c) => USB_PATH.test(c));
        usbPath.forEach((u, i) => {
          mark(u, i === usbPath.length - 1 ? need.why : `hub to ${need.why}`);
        });
        below.push(...(await lowerDevices(fs, dir)));
      }
      level = below;
    }
  }
  return new Map([...uses].map(([a, whys]) => [a, whys.join('; ').slice(0, HOST_USE_MAX)]));
}

/** What a block or net device is built on, as links to their sysfs directories. */
async function lowerDevices(fs: SysTree, dir: string): Promise<string[]> {
  const out: string[] = [];
  const follow = async (sub: string, filter: (n: string) => boolean) => {
    for (const n of (await fs.names(sub, DIR_ENTRIES_MAX)).filter(filter).slice(0, HOST_NEED_NODES)) {
      const t = await fs.link(`${sub}/${n}`);
      // A bridge's brif/<port> points at the port's `brport` directory.
      if (t) out.push(basename(t) === 'brport' ? dirname(t) : t);
    }
  };
  await follow(`${dir}/slaves`, () => true);
  await follow(`${dir}/brif`, () => true);
  await follow(dir, (n) => n.startsWith('lower_'));
  return out;
}
