// The device inventory of this host as the agent serves it: pci.ids loaded once, the host's needs and sysfs read
// at each call (cheap: a few thousand small files at most, each bounded).
import type { DeviceInventory } from '../../shared/devices.js';
import { readHostNeeds } from './host-needs.js';
import { loadPciIds, PCI_IDS_PATHS, type PciIds } from './pci-ids.js';
import { readDeviceInventory } from './sysfs.js';

export interface InventoryReaderOptions {
  /** The host's uplink NIC (`vmlink agent --uplink`). */
  uplink?: string;
  sysRoot?: string;
  procRoot?: string;
  pciIdsPaths?: readonly string[];
}

/** A function that reads this host's devices. */
export function deviceInventoryReader(o: InventoryReaderOptions = {}): () => Promise<DeviceInventory> {
  let ids: Promise<PciIds | undefined> | undefined;
  return async () => {
    ids ??= loadPciIds(o.pciIdsPaths ?? PCI_IDS_PATHS).catch(() => undefined);
    const [pciIds, hostNeeds] = await Promise.all([ids, readHostNeeds(o.uplink, o.procRoot)]);
    return readDeviceInventory({
      ...(o.sysRoot ? { sysRoot: o.sysRoot } : {}),
      ...(pciIds ? { pciIds } : {}),
      hostNeeds,
    });
  };
}
