// Hypervisor backends by name (one today: qemu).
import { QemuDriver, type QemuDriverOptions } from './qemu/driver.js';
import type { HypervisorDriver } from './types.js';

/** Constructors of the hypervisor backends, by name. */
export const hypervisorDrivers = {
  qemu: (opts: QemuDriverOptions) => new QemuDriver(opts),
} satisfies Record<string, (opts: QemuDriverOptions) => HypervisorDriver>;

/** Name of a hypervisor backend. */
export type HypervisorKind = keyof typeof hypervisorDrivers;

/** Builds the named hypervisor backend. */
export function createHypervisorDriver(kind: HypervisorKind, opts: QemuDriverOptions): HypervisorDriver {
  return hypervisorDrivers[kind](opts);
}
