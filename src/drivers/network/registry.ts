// Network backends by name; the agent picks one from its host's config.
import type { Runner } from '../../exec/runner.js';
import { FakeNetworkDriver } from './fake/driver.js';
import { LinuxNetworkDriver } from './linux/driver.js';
import { OvsNetworkDriver } from './ovs/driver.js';
import type { NetworkDriver } from './types.js';

/** What every network backend constructor receives. */
export interface NetworkDriverOptions {
  runner: Runner;
  /** Agent state directory (each backend keeps its networks in its own directory under it). */
  stateDir: string;
  /** Network namespace to manage; undefined = the agent's own. */
  netns?: string;
}

/** Network backend constructors by name. */
export const networkDrivers = {
  linux: (opts: NetworkDriverOptions) => new LinuxNetworkDriver(opts),
  ovs: (opts: NetworkDriverOptions) => new OvsNetworkDriver(opts),
  // In memory, for the simulated fleet (src/fleet-sim/): it stands in for the linux backend there, and a real
  // host's agent never offers it (agent/main.ts `availableNetworks`).
  fake: (_opts: NetworkDriverOptions) => new FakeNetworkDriver(),
} satisfies Record<string, (opts: NetworkDriverOptions) => NetworkDriver>;

/** Name of a network backend. */
export type NetworkDriverName = keyof typeof networkDrivers;
