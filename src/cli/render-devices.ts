// `vmlink host devices`: each host's PCI functions and USB devices as tables.
import type { HostDevicesList } from '../controller/wire-devices.js';
import type { DeviceInventory, PciDevice } from '../shared/devices.js';
import { table } from './render.js';

/** Longest name shown in a cell (pci.ids names can be long); `--json` has them whole. */
const NAME_WIDTH = 48;

const clip = (s: string | undefined) =>
  s === undefined ? undefined : s.length > NAME_WIDTH ? `${s.slice(0, NAME_WIDTH - 1)}…` : s;

function names(d: PciDevice): string | undefined {
  const n = [d.vendorName, d.deviceName].filter(Boolean).join(' ');
  return clip(n || undefined);
}

function sriov(d: PciDevice): string | undefined {
  if (d.sriov) return `PF ${d.sriov.numVfs}/${d.sriov.totalVfs} VFs`;
  if (d.physfn) return `VF of ${d.physfn}`;
  return undefined;
}

function mdev(d: PciDevice): string | undefined {
  if (!d.mdevTypes?.length) return undefined;
  return d.mdevTypes.map((t) => `${t.name ?? t.id} (${t.available} free)`).join(', ');
}

/** One host's inventory: the IOMMU state, then PCI and USB tables. */
export function renderInventory(inv: DeviceInventory): string {
  const out = [
    inv.iommu
      ? 'IOMMU: on'
      : 'IOMMU: off (no PCI passthrough: enable VT-d/AMD-Vi and boot with intel_iommu=on or amd_iommu=on)',
  ];
  out.push(
    table(
      ['ADDRESS', 'ID', 'NAME', 'CLASS', 'DRIVER', 'IOMMU', 'NUMA', 'SR-IOV', 'MDEV', 'HOST USE'],
      inv.pci.map((d) => [
        d.address,
        `${d.vendorId}:${d.deviceId}`,
        names(d),
        clip(d.className) ?? d.classCode,
        d.driver,
        d.iommuGroup,
        d.numaNode,
        sriov(d),
        mdev(d),
        d.hostUse,
      ]),
    ),
  );
  if (inv.usb.length)
    out.push(
      '',
      table(
        ['USB', 'ID', 'BUS/DEV', 'NAME', 'HOST USE'],
        inv.usb.map((u) => [
          u.path,
          `${u.vendorId}:${u.productId}`,
          `${String(u.busnum).padStart(3, '0')}/${String(u.devnum).padStart(3, '0')}`,
          clip([u.manufacturer, u.product].filter(Boolean).join(' ') || undefined),
          u.hostUse,
        ]),
      ),
    );
  else out.push('', 'USB: none');
  return out.join('\n');
}

/** Every host asked: a heading per host, its inventory or why there is none. */
export function renderHostDevices(list: HostDevicesList): string {
  if (!list.hosts.length) return 'no hosts (apply a spec first)';
  return list.hosts
    .map((h) =>
      h.devices
        ? `== ${h.host}\n${renderInventory(h.devices)}`
        : `== ${h.host}\nunavailable: ${h.error ?? '?'}`,
    )
    .join('\n\n');
}
