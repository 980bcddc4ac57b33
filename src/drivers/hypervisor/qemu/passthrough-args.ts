// QEMU arguments of the host devices passed to a VM (spec `vms[].devices`, checked at plan time by
// plan/passthrough.ts): PCI functions through VFIO, each slot's functions in a hot-pluggable root port of their own,
// and USB devices on one xHCI controller. A pure function of the requests (golden-tested).
import { type DeviceRequest, PCI_ADDRESS_PATTERN } from '../../../shared/devices.js';
import { InvalidRequestError } from '../../../shared/errors.js';
import { VM_DEVICES_MAX } from '../../../shared/storage.js';

/**
 * Chassis of the first passthrough root port. Root ports need distinct chassis numbers (8 bits): NICs take 1-8 and
 * disks follow from 9, so passthrough ports start well above them.
 */
export const PASSTHROUGH_CHASSIS_BASE = 256 - VM_DEVICES_MAX * 2;
/** QEMU id of the xHCI controller the USB devices sit on. */
export const PASSTHROUGH_XHCI = 'ptxhci';

const USB_ID = /^[0-9a-f]{4}:[0-9a-f]{4}$/;

/** QEMU id of device `i` of `config.devices` (`pt0`, `pt1`, ...), and of the root port of PCI slot group `g`. */
export const passthroughDeviceId = (i: number) => `pt${i}`;
export const passthroughPortId = (g: number) => `ptport${g}`;

/**
 * `-device` arguments of `devices`. PCI functions of one host slot (`0000:01:00.0` and `.1`, a GPU and its audio)
 * go into one root port as functions of one multifunction device, as the guest's drivers expect them; functions are
 * numbered from 0 in host order, so a slot passed without its function 0 still enumerates. USB devices are matched
 * by vendor and product on a `qemu-xhci` controller (added only when a VM has USB devices).
 */
export function passthroughArgs(devices: readonly DeviceRequest[]): string[] {
  // The wire checks these already; a value that could add a QEMU option never reaches the command line.
  for (const d of devices)
    if ('pci' in d ? !PCI_ADDRESS_PATTERN.test(d.pci) : !USB_ID.test(d.usb))
      throw new InvalidRequestError(`bad passthrough device ${JSON.stringify(d)}`);
  const out: string[] = [];
  const slots = new Map<string, Array<{ address: string; index: number }>>();
  devices.forEach((d, index) => {
    if (!('pci' in d)) return;
    const slot = d.pci.slice(0, d.pci.lastIndexOf('.'));
    slots.set(slot, [...(slots.get(slot) ?? []), { address: d.pci, index }]);
  });
  [...slots.values()].forEach((fns, g) => {
    const port = passthroughPortId(g);
    out.push('-device', `pcie-root-port,id=${port},bus=pcie.0,chassis=${PASSTHROUGH_CHASSIS_BASE + g}`);
    const sorted = [...fns].sort((a, b) => (a.address < b.address ? -1 : 1));
    sorted.forEach((f, fn) => {
      const multi = sorted.length > 1 && fn === 0 ? ',multifunction=on' : '';
      out.push(
        '-device',
        `vfio-pci,host=${f.address},id=${passthroughDeviceId(f.index)},bus=${port},addr=0x0.${fn}${multi}`,
      );
    });
  });
  const usb = devices.flatMap((d, index) => ('usb' in d ? [{ id: d.usb, index }] : []));
  if (usb.length) {
    out.push('-device', `qemu-xhci,id=${PASSTHROUGH_XHCI}`);
    for (const u of usb) {
      const [vendor, product] = u.id.split(':');
      out.push(
        '-device',
        `usb-host,id=${passthroughDeviceId(u.index)},bus=${PASSTHROUGH_XHCI}.0,vendorid=0x${vendor},productid=0x${product}`,
      );
    }
  }
  return out;
}
