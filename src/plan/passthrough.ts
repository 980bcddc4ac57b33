// Plan-time checks of host devices passed to VMs (spec `vms[].devices`) against the inventory the host's agent
// reported: pure, so a plan refuses a request before anything changes, each refusal naming the spec path, why, and
// what to do about it.
import type { DeviceInventory, DeviceRequest, PciDevice } from '../shared/devices.js';
import { InvalidSpecError } from '../shared/errors.js';

/** What a host allows and what its other VMs already hold. */
export interface PassthroughPolicy {
  /** `hosts[].passthrough.usb`: `vendor:product` or `vendor:*`. */
  usbAllow: readonly string[];
  /** Spec path of that list, for messages (`hosts[0].passthrough.usb`). */
  usbAllowPath: string;
  /** Devices other VMs of this host take (`deviceKey`), with the VM's name; updated by `checkHostPassthrough`. */
  takenBy?: Map<string, string>;
}

/** The VM asking: its name, host and index in `spec.vms` (for spec paths). */
export interface PassthroughVm {
  name: string;
  host: string;
  index: number;
}

/** One request refused: where in the spec, why, and what to do. */
export interface PassthroughRefusal {
  path: string;
  device: string;
  reason: string;
  fix: string;
}

/** A request as one string: `pci 0000:65:00.0`, `usb 046d:c52b`. */
export function deviceKey(req: DeviceRequest): string {
  return 'pci' in req ? `pci ${req.pci}` : `usb ${req.usb}`;
}

/** Driver a PCI function must be bound to for VFIO. */
export const VFIO_DRIVER = 'vfio-pci';

const isBridge = (d: PciDevice) => d.classCode.startsWith('0604');

/**
 * Refusals of `vm`'s `requests` on a host with `inventory` (undefined: its agent did not report devices). Also
 * claims each device accepted, or any member of its IOMMU group, in `policy.takenBy` for the VMs checked after it.
 */
export function checkPassthrough(
  vm: PassthroughVm,
  requests: readonly DeviceRequest[],
  inventory: DeviceInventory | undefined,
  policy: PassthroughPolicy,
): PassthroughRefusal[] {
  const out: PassthroughRefusal[] = [];
  const taken = policy.takenBy ?? new Map<string, string>();
  const wanted = new Set(requests.flatMap((r) => ('pci' in r ? [r.pci] : [])));
  requests.forEach((req, k) => {
    const path = `vms[${vm.index}].devices[${k}]`;
    const device = deviceKey(req);
    const refuse = (reason: string, fix: string) => {
      out.push({ path, device, reason, fix });
    };
    const holder = taken.get(device);
    if (holder !== undefined && holder !== vm.name) {
      refuse(
        `${device} on host "${vm.host}" is already passed to VM "${holder}"`,
        'a host device goes to one VM: remove it from one of them',
      );
      return;
    }
    if (!inventory) {
      refuse(
        `host "${vm.host}" did not report its devices (its agent predates passthrough)`,
        'upgrade the vmlink agent on that host',
      );
      return;
    }
    const before = out.length;
    if ('usb' in req) checkUsb(req.usb, vm, inventory, policy, refuse);
    else checkPci(req.pci, vm, inventory, wanted, taken, refuse);
    if (out.length === before) {
      taken.set(device, vm.name);
      if ('pci' in req) {
        const g = inventory.pci.find((d) => d.address === req.pci)?.iommuGroup;
        for (const m of inventory.pci.filter((d) => g !== undefined && d.iommuGroup === g))
          taken.set(`group ${m.iommuGroup}`, vm.name);
      }
    }
  });
  return out;
}

function checkUsb(
  id: string,
  vm: PassthroughVm,
  inventory: DeviceInventory,
  policy: PassthroughPolicy,
  refuse: (reason: string, fix: string) => void,
): void {
  const [vendor, product] = id.split(':') as [string, string];
  if (!policy.usbAllow.some((a) => a === id || a === `${vendor}:*`)) {
    refuse(
      `USB device ${id} is not in host "${vm.host}"'s allow-list (${policy.usbAllowPath}: ${policy.usbAllow.join(', ') || 'empty'})`,
      `add "${id}" (or "${vendor}:*") to ${policy.usbAllowPath} to let VMs take it`,
    );
    return;
  }
  const matching = inventory.usb.filter((u) => u.vendorId === vendor && u.productId === product);
  if (!matching.length) {
    refuse(
      `host "${vm.host}" has no USB device ${id} plugged in`,
      `plug it in, or pick one that \`vmlink host devices ${vm.host}\` lists`,
    );
    return;
  }
  // QEMU takes a USB device by vendor:product: with the host's own among the matches it may take that one.
  const needed = matching.find((u) => u.hostUse);
  if (needed)
    refuse(
      `the host needs USB device ${id} at ${needed.path} (${needed.hostUse})${matching.length > 1 ? `, and QEMU, matching by vendor:product, cannot tell it from the other ${matching.length - 1}` : ''}`,
      'pass another model of device; one the host runs on must stay with it',
    );
}

function checkPci(
  address: string,
  vm: PassthroughVm,
  inventory: DeviceInventory,
  wanted: ReadonlySet<string>,
  taken: ReadonlyMap<string, string>,
  refuse: (reason: string, fix: string) => void,
): void {
  if (!inventory.iommu) {
    refuse(
      `host "${vm.host}" runs without an IOMMU, so no PCI device can be passed through safely`,
      'enable VT-d (Intel) or AMD-Vi (AMD) in the firmware, boot the host with intel_iommu=on (or amd_iommu=on) iommu=pt, and reboot',
    );
    return;
  }
  const dev = inventory.pci.find((d) => d.address === address);
  if (!dev) {
    refuse(
      `host "${vm.host}" has no PCI function ${address}`,
      `pick one that \`vmlink host devices ${vm.host}\` lists`,
    );
    return;
  }
  const what = describe(dev);
  if (isBridge(dev)) {
    refuse(
      `${address} is a PCI bridge (${what}); a bridge cannot be passed through`,
      'pass the devices behind it instead',
    );
    return;
  }
  if (dev.hostUse) {
    refuse(
      `the host needs ${address} (${what}): ${dev.hostUse}`,
      'pass another device; this one can only go once the host no longer runs on it',
    );
    return;
  }
  if (dev.sriov && dev.sriov.numVfs > 0) {
    refuse(
      `${address} (${what}) is an SR-IOV physical function with ${dev.sriov.numVfs} VFs enabled (${dev.sriov.vfs.join(', ')}); passing it would take them away from their users`,
      `pass one of its VFs instead, or disable them first (echo 0 > /sys/bus/pci/devices/${address}/sriov_numvfs)`,
    );
    return;
  }
  if (dev.iommuGroup === undefined) {
    refuse(
      `${address} (${what}) is in no IOMMU group`,
      'the IOMMU does not cover it; check the kernel log for DMAR/AMD-Vi errors about it',
    );
    return;
  }
  const groupHolder = taken.get(`group ${dev.iommuGroup}`);
  if (groupHolder !== undefined && groupHolder !== vm.name) {
    refuse(
      `${address} shares IOMMU group ${dev.iommuGroup} with devices passed to VM "${groupHolder}"`,
      'a whole IOMMU group goes to one VM: pass these devices to the same VM, or move the card to a slot with its own group',
    );
    return;
  }
  // The whole group goes to the VM: every other endpoint in it must be free for VFIO or passed along.
  for (const m of inventory.pci) {
    if (m.iommuGroup !== dev.iommuGroup || m.address === address || isBridge(m)) continue;
    if (m.hostUse) {
      refuse(
        `${address} shares IOMMU group ${dev.iommuGroup} with ${m.address} (${describe(m)}), which the host needs: ${m.hostUse}`,
        'move the card to a slot with its own IOMMU group (the group cannot be split while the host uses that device)',
      );
      return;
    }
    if (!wanted.has(m.address) && m.driver !== undefined && m.driver !== VFIO_DRIVER) {
      refuse(
        `${address} shares IOMMU group ${dev.iommuGroup} with ${m.address} (${describe(m)}), which is bound to ${m.driver}`,
        `bind ${m.address} to vfio-pci (driverctl set-override ${m.address} vfio-pci) or pass it too`,
      );
      return;
    }
  }
  if (dev.driver !== VFIO_DRIVER) {
    refuse(
      `${address} (${what}) is bound to ${dev.driver ?? 'no driver'}, not vfio-pci`,
      `bind it to vfio-pci: driverctl set-override ${address} vfio-pci`,
    );
  }
}

/** `10de:2330 GH100 [H100 SXM5 80GB]`, or the IDs alone. */
function describe(d: PciDevice): string {
  const name = d.deviceName ?? d.className;
  return `${d.vendorId}:${d.deviceId}${name ? ` ${name}` : ''}`;
}

/** The refusals of every VM of one host, in spec order; a device (or IOMMU group) goes to the first VM asking. */
export function checkHostPassthrough(
  vms: ReadonlyArray<{ vm: PassthroughVm; requests: readonly DeviceRequest[] }>,
  inventory: DeviceInventory | undefined,
  policy: Omit<PassthroughPolicy, 'takenBy'>,
): PassthroughRefusal[] {
  const takenBy = new Map<string, string>();
  return vms.flatMap(({ vm, requests }) => checkPassthrough(vm, requests, inventory, { ...policy, takenBy }));
}

/** The refusals as one spec error (every issue with its path), or undefined when there are none. */
export function passthroughError(refusals: readonly PassthroughRefusal[]): InvalidSpecError | undefined {
  if (refusals.length === 0) return undefined;
  return new InvalidSpecError(refusals.map((r) => ({ path: r.path, message: `${r.reason}; ${r.fix}` })));
}
