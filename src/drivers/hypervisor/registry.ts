// Hypervisor backends by name: qemu, and fake (in memory, for the simulated fleet: src/fleet-sim/).
import { FakeHypervisorDriver } from './fake/driver.js';
import { QemuDriver, type QemuDriverOptions } from './qemu/driver.js';
import type { HypervisorDriver } from './types.js';

/** Constructors of the hypervisor backends, by name. */
export const hypervisorDrivers = {
  qemu: (opts: QemuDriverOptions) => new QemuDriver(opts),
  // Runs nothing: a simulated host's VMs live in its memory (no agent on a real host ever picks it).
  fake: (_opts: QemuDriverOptions) => new FakeHypervisorDriver(),
} satisfies Record<string, (opts: QemuDriverOptions) => HypervisorDriver>;

/** Name of a hypervisor backend. */
export type HypervisorKind = keyof typeof hypervisorDrivers;

/** Builds the named hypervisor backend. */
export function createHypervisorDriver(kind: HypervisorKind, opts: QemuDriverOptions): HypervisorDriver {
  return hypervisorDrivers[kind](opts);
}
