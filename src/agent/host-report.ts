// A compute host's report: its capabilities, networks, VMs (with their ports checked against their bridges), uplink,
// security groups, devices, pools, tuning and load balancers, read together.
import { cpus, totalmem } from 'node:os';
import type { NetworkDriver } from '../drivers/network/types.js';
import type { DeviceInventory } from '../shared/devices.js';
import type { HostReport, NetworkBackend } from '../shared/model.js';
import { VERSION } from '../shared/version.js';
import type { AgentDeps } from './agent.js';
import { observeLbs } from './lb.js';
import { nicBackend } from './port-config.js';
import { observeSecurityGroups } from './security-groups.js';
import type { StorageOps } from './storage.js';
import { observeTuning } from './tuning.js';

/** Observed state and capabilities of a compute host (`Agent.report`). */
export async function computeHostReport(
  deps: AgentDeps,
  backends: NetworkBackend[],
  readDevices: () => Promise<DeviceInventory | undefined>,
  storage: Pick<StorageOps, 'listPools'>,
): Promise<HostReport> {
  const { hypervisor, uplink, uplinkDevice } = deps;
  const drivers = Object.values(deps.networks);
  const [accel, confidential, caps, networks, vms, up, groups, devices, pools, tuning, resources, lbs] =
    await Promise.all([
      hypervisor.accelerator(),
      hypervisor.confidential?.().catch(() => undefined),
      Promise.all(drivers.map((d) => d.capabilities())),
      Promise.all(drivers.map((d) => d.listNetworks())),
      hypervisor.list(),
      uplink && uplinkDevice ? uplink.observeUplink(uplinkDevice).catch(() => undefined) : undefined,
      observeSecurityGroups(deps.networks),
      readDevices(),
      storage.listPools(),
      observeTuning(deps.tuning),
      hypervisor.hostResources?.().catch(() => undefined),
      observeLbs(deps.lb),
    ]);
  // A VM whose tap fell off its bridge is broken even if QEMU runs. Backends that can list all their ports
  // at once answer from one query instead of one command per NIC.
  const masters = new Map<NetworkDriver, Promise<Map<string, string | undefined>> | undefined>();
  const attached = async (d: NetworkDriver, tap: string, bridge: string) => {
    if (!masters.has(d)) masters.set(d, d.portMasters?.());
    const all = await masters.get(d);
    return all ? all.get(tap) === bridge : d.portAttached(tap, bridge);
  };
  await Promise.all(
    vms.map(async (vm) => {
      // The config the hypervisor read while listing, else read now.
      const cfg = vm.config ?? (await hypervisor.config(vm.name));
      if (cfg)
        vm.ports = cfg.nics.map((n) => ({
          network: n.network,
          tap: n.tap,
          bridge: n.bridge,
          ...(n.trunk ? { trunk: n.trunk.networks } : {}),
        }));
      // The plan names changed fields and hot-plugs NICs from the config a VM runs with.
      if (cfg) vm.config = cfg;
      for (const nic of cfg?.nics ?? []) {
        const d = deps.networks[nicBackend(nic)];
        if (!d || !(await attached(d, nic.tap, nic.bridge)))
          vm.problems.push(`port ${nic.tap} is not attached to ${nic.bridge}`);
      }
    }),
  );
  return {
    host: deps.host,
    agentVersion: VERSION,
    capabilities: {
      ...accel,
      ...(confidential ? { confidential } : {}),
      ...(resources ? { resources } : {}),
      cpus: cpus().length,
      memoryMiB: Math.floor(totalmem() / 1048576),
      network: Object.assign({}, ...caps) as Record<string, boolean>,
      backends,
      ...(tuning ? { tuning } : {}),
    },
    networks: networks.flat(),
    vms,
    ...(up ? { uplink: up } : {}),
    ...(groups.length ? { securityGroups: groups } : {}),
    ...(devices ? { devices } : {}),
    ...(pools.length ? { pools } : {}),
    ...(lbs.length ? { loadBalancers: lbs } : {}),
  };
}
