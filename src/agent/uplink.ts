// Adapts the linux network driver's uplink support (UplinkManager + snapshotUplink/restoreUplink) for the agent.
import type { LinuxNetworkDriver } from '../drivers/network/linux/driver.js';
import { restoreUplink, snapshotUplink, type UplinkSnapshot } from '../drivers/network/linux/uplink.js';
import type { NetworkDriver } from '../drivers/network/types.js';
import type { Runner } from '../exec/runner.js';
import type { UplinkControl } from './agent.js';

/** The uplink control of this host, through its linux network driver; undefined without one. */
export function linuxUplinkControl(
  driver: NetworkDriver | undefined,
  runner: Runner,
): UplinkControl | undefined {
  const linux = driver as LinuxNetworkDriver | undefined;
  if (!linux || typeof linux.observeUplink !== 'function') return undefined;
  return {
    observeUplink: (device) => linux.observeUplink(device),
    configureUplink: (cfg, hash, ctx) => linux.configureUplink(cfg, hash, ctx),
    snapshot: (device) => snapshotUplink(runner, device),
    restore: (snapshot) => restoreUplink(runner, snapshot as UplinkSnapshot),
  };
}
