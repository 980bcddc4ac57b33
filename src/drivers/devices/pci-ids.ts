// Names of PCI vendors, devices and classes from the pci.ids database (Debian's `pci.ids` package, pulled in by
// `pciutils`). Without the file, devices are listed by number and classes by a built-in table of base classes.
import { DEVICE_TEXT_MAX } from '../../shared/devices.js';
import { readFileCapped } from '../../shared/state-file.js';

/** Where distributions keep pci.ids, first match wins. */
export const PCI_IDS_PATHS = ['/usr/share/misc/pci.ids', '/usr/share/hwdata/pci.ids'] as const;
/** Largest pci.ids read (the real one is about 1.4 MB). */
export const PCI_IDS_MAX_BYTES = 8 << 20;

/** What pci.ids knows: vendor, `vendor:device`, class (`03`), subclass (`0302`) and prog-if (`030200`) names. */
export interface PciIds {
  vendors: Map<string, string>;
  devices: Map<string, string>;
  classes: Map<string, string>;
}

/** Base class names (PCI Code and ID Assignment Specification), used when pci.ids is absent. */
const BASE_CLASSES: Record<string, string> = {
  '00': 'Unclassified device',
  '01': 'Mass storage controller',
  '02': 'Network controller',
  '03': 'Display controller',
  '04': 'Multimedia controller',
  '05': 'Memory controller',
  '06': 'Bridge',
  '07': 'Communication controller',
  '08': 'Generic system peripheral',
  '09': 'Input device controller',
  '0a': 'Docking station',
  '0b': 'Processor',
  '0c': 'Serial bus controller',
  '0d': 'Wireless controller',
  '0e': 'Intelligent controller',
  '0f': 'Satellite communications controller',
  '10': 'Encryption controller',
  '11': 'Signal processing controller',
  '12': 'Processing accelerators',
  '13': 'Non-Essential Instrumentation',
  '40': 'Coprocessor',
  ff: 'Unassigned class',
};

const VENDOR = /^([0-9a-f]{4})\s+(.+)$/;
const DEVICE = /^\t([0-9a-f]{4})\s+(.+)$/;
const CLASS = /^C ([0-9a-f]{2})\s+(.+)$/;
const SUBCLASS = /^\t([0-9a-f]{2})\s+(.+)$/;
const PROG_IF = /^\t\t([0-9a-f]{2})\s+(.+)$/;

/**
 * Parses pci.ids text. Subsystem lines (two tabs under a device) are skipped: vmlink names the chip, not the
 * board. Lines that match nothing are ignored, so a newer format only loses names.
 */
export function parsePciIds(text: string): PciIds {
  const ids: PciIds = { vendors: new Map(), devices: new Map(), classes: new Map() };
  let vendor: string | undefined;
  let klass: string | undefined;
  let subclass: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line === '' || line.startsWith('#')) continue;
    const cls = CLASS.exec(line);
    if (cls) {
      klass = cls[1]!;
      subclass = undefined;
      vendor = undefined;
      ids.classes.set(klass, clip(cls[2]!));
      continue;
    }
    const ven = VENDOR.exec(line);
    if (ven) {
      vendor = ven[1]!;
      klass = undefined;
      ids.vendors.set(vendor, clip(ven[2]!));
      continue;
    }
    // One tab: a device under a vendor, or a subclass under a class; two tabs: a prog-if (or a subsystem).
    const one = DEVICE.exec(line);
    if (one && vendor) ids.devices.set(`${vendor}:${one[1]}`, clip(one[2]!));
    const sub = SUBCLASS.exec(line);
    if (sub && klass) {
      subclass = `${klass}${sub[1]}`;
      ids.classes.set(subclass, clip(sub[2]!));
    }
    const prog = PROG_IF.exec(line);
    if (prog && klass && subclass) ids.classes.set(`${subclass}${prog[1]}`, clip(prog[2]!));
  }
  return ids;
}

const clip = (s: string) => s.trim().slice(0, DEVICE_TEXT_MAX);

/** Reads and parses the first pci.ids of `paths` that exists; undefined when none does. */
export async function loadPciIds(paths: readonly string[] = PCI_IDS_PATHS): Promise<PciIds | undefined> {
  for (const p of paths) {
    const text = await readFileCapped(p, { maxBytes: PCI_IDS_MAX_BYTES });
    if (text !== undefined) return parsePciIds(text);
  }
  return undefined;
}

/** Vendor and device names of `vendorId:deviceId`, where known. */
export function deviceNames(
  ids: PciIds | undefined,
  vendorId: string,
  deviceId: string,
): { vendorName?: string; deviceName?: string } {
  const vendorName = ids?.vendors.get(vendorId);
  const deviceName = ids?.devices.get(`${vendorId}:${deviceId}`);
  return { ...(vendorName ? { vendorName } : {}), ...(deviceName ? { deviceName } : {}) };
}

/**
 * The most specific name of a six-digit class code: its subclass (`3D controller`, `Ethernet controller`), else its
 * base class; without pci.ids, the built-in base class names. A prog-if name alone (`NVM Express`) says less than its
 * subclass, so it is not used.
 */
export function className(ids: PciIds | undefined, classCode: string): string | undefined {
  const base = classCode.slice(0, 2);
  return ids?.classes.get(classCode.slice(0, 4)) ?? ids?.classes.get(base) ?? BASE_CLASSES[base];
}
