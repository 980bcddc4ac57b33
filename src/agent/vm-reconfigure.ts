// A running VM's reconfiguration in place: hot-plug what QEMU can take, restart for the rest; its taps kept.
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import type { NetworkDriver, OpContext } from '../drivers/network/types.js';
import { UnsupportedError } from '../shared/errors.js';
import type { NetworkBackend, NicConfig, ObservedVm, VmConfig } from '../shared/model.js';
import { legacyTapName, tapName } from '../spec/net.js';
import { nicBackend } from './port-config.js';
import type { AgentAction } from './wire.js';

/** What a hot-plug needs of the agent. */
export interface HotplugHost {
  hypervisor: HypervisorDriver;
  networks: Partial<Record<NetworkBackend, NetworkDriver>>;
  vm(name: string): Promise<ObservedVm>;
  ensurePort(nic: NicConfig, ctx: OpContext): Promise<void>;
  /** Throws when this host no longer holds the VM (another took it meanwhile). */
  assertStillHeld(name: string): Promise<void>;
}

/**
 * `vm.hotplug`: the VM's new config, hot-plugged where it runs and can take it; otherwise (stopped, started without
 * hot-plug slots, or a change QEMU refuses up front) applied by a restart. Ports of NICs it no longer has go.
 */
export async function hotplugVm(
  h: HotplugHost,
  action: Extract<AgentAction, { kind: 'vm.hotplug' }>,
  ctx: OpContext,
): Promise<void> {
  const name = action.vm.name;
  const vm = await h.vm(name);
  const before = await h.hypervisor.config(name);
  // NICs it keeps stay on their taps, hashed names from before readable ones included.
  const want = keepLegacyTaps(action.vm, before);
  for (const nic of want.nics) await h.ensurePort(nic, ctx);
  let why: string | undefined;
  if (vm.state !== 'running') why = `it is ${vm.state}`;
  else if (!(await h.hypervisor.canHotplug(name))) why = 'it was started without hot-plug slots';
  else
    try {
      await h.hypervisor.hotplug(want, action.configHash, ctx, action.secrets);
    } catch (e) {
      // Refused before anything changed (a QEMU without a CD-ROM controller, or without network for an
      // iSCSI or NFS disk): a restart applies it.
      if (!(e instanceof UnsupportedError)) throw e;
      why = e.message;
    }
  if (why !== undefined) {
    // Not running, started by a vmlink without hot-plug slots, or refused: the change is applied by a restart.
    ctx.progress?.(`VM ${name} cannot take this hot-plug (${why}); applying the change by a restart`);
    if (vm.state !== 'stopped') await h.hypervisor.stop(name, { force: vm.state === 'crashed' }, ctx);
    await h.hypervisor.create(want, action.configHash, ctx, action.secrets);
    if (action.vm.state === 'running') await h.hypervisor.start(name, ctx, action.secrets);
  }
  await h.assertStillHeld(name);
  // Ports of NICs the VM no longer has.
  const kept = new Set(want.nics.map((n) => n.tap));
  for (const nic of before?.nics ?? [])
    if (!kept.has(nic.tap)) await h.networks[nicBackend(nic)]?.deletePort(nic.tap, ctx);
}

/**
 * `want` with the taps a running VM's QEMU holds under their names from before readable names: repairing its ports
 * must not swap a tap from under it. The readable names take over when the VM is next reconfigured.
 */
export function keepLegacyTaps(want: VmConfig, before: VmConfig | undefined): VmConfig {
  if (!before) return want;
  return {
    ...want,
    nics: want.nics.map((nic, i) => {
      const old = before.nics[i]?.tap;
      return old === legacyTapName(want.name, i) && nic.tap === tapName(want.name, i)
        ? { ...nic, tap: old }
        : nic;
    }),
  };
}
