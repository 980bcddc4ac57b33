// Host devices and passthrough (issue 10): the inventory an agent reads from sysfs, and what a VM may ask for.
// Shared by the devices driver (which reads it), the agent's report, the plan-time checks and the CLI.

/** Most PCI devices an inventory lists (a large server has a few hundred functions). */
export const PCI_DEVICES_MAX = 2_048;
/** Most USB devices an inventory lists. */
export const USB_DEVICES_MAX = 256;
/** Most mediated device types one function lists. */
export const MDEV_TYPES_MAX = 64;
/** Longest name or descriptor text an inventory carries (pci.ids names, USB strings, mdev type names). */
export const DEVICE_TEXT_MAX = 200;
/** Longest `hostUse` (every reason the host needs a function, joined). */
export const HOST_USE_MAX = 1_000;
/** `domain:bus:device.function` in lower-case hex, as sysfs names a PCI function. */
export const PCI_ADDRESS_PATTERN = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

/** One PCI function as sysfs shows it. */
export interface PciDevice {
  /** Domain:bus:device.function, e.g. `0000:65:00.0`. */
  address: string;
  /** Four hex digits each, lower case. */
  vendorId: string;
  deviceId: string;
  /** Names from pci.ids when the host has it. */
  vendorName?: string;
  deviceName?: string;
  /** Six hex digits (class, subclass, prog-if), e.g. `030200` for a 3D controller. */
  classCode: string;
  /** Class name (`Display controller`, `Ethernet controller`, ...). */
  className?: string;
  /** The kernel driver bound now (`nvidia`, `vfio-pci`, `nvme`, ...); absent: none. */
  driver?: string;
  /** IOMMU group number; absent: no IOMMU (or it is off). */
  iommuGroup?: number;
  /** NUMA node; absent or -1: none reported. */
  numaNode?: number;
  /** SR-IOV: how many VFs it may have and has now, and their addresses. */
  sriov?: { totalVfs: number; numVfs: number; vfs: string[] };
  /** A VF: the address of its physical function. */
  physfn?: string;
  /** Mediated device types it offers (`mdev_supported_types`), with how many more each can create. */
  mdevTypes?: Array<{ id: string; name?: string; available: number }>;
  /** Why the host itself needs it (its boot disk's controller, its uplink's NIC); absent: free to pass through. */
  hostUse?: string;
}

/** One USB device. */
export interface UsbDevice {
  /** `bus-port.port` path as sysfs names it, e.g. `1-2.3`. */
  path: string;
  busnum: number;
  devnum: number;
  vendorId: string;
  productId: string;
  manufacturer?: string;
  product?: string;
  /** Why the host itself needs it (a USB disk it boots from, a USB NIC as its uplink); absent: free. */
  hostUse?: string;
}

/** A host's devices as its agent reads them. */
export interface DeviceInventory {
  /** Whether the kernel runs an IOMMU (`/sys/kernel/iommu_groups` has groups). */
  iommu: boolean;
  pci: PciDevice[];
  usb: UsbDevice[];
}

/** A VM's passthrough request (spec `vms[].devices[]`): one PCI function by address, or a USB device by IDs. */
export type DeviceRequest = { pci: string } | { usb: string };
