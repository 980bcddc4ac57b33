// Hot-plug of a running VM: its disks (disk-plug.ts), then its NICs (nic-plug.ts), so that it matches a new
// config without a restart. What else differs (CPUs, memory, image) needs a stop.
import { InvalidStateError, UnsupportedError } from '../../../shared/errors.js';
import type { VmConfig } from '../../../shared/model.js';
import type { OpContext } from '../../network/types.js';
import type { SecretValues } from '../types.js';
import { type DiskPlugDeps, onlyNicsAndDisksDiffer, plugDisks } from './disk-plug.js';
import { hasHotplugSlots } from './hotplug.js';
import { type NicPlugDeps, plugNics } from './nic-plug.js';
import type { StoredVm } from './vm-store.js';

/** What hot-plug needs of the driver for one running VM. */
export type HotplugDeps = NicPlugDeps & Omit<DiskPlugDeps, 'vm'>;

/** Brings running VM `vm` (as stored) to `cfg`, which may differ from it in NICs and disks; records `configHash`. */
export async function hotplugVm(
  d: HotplugDeps,
  vm: StoredVm,
  cfg: VmConfig,
  configHash: string,
  secrets: SecretValues | undefined,
  ctx?: OpContext,
): Promise<void> {
  const name = cfg.name;
  const subject = `vm/${name}`;
  if (!onlyNicsAndDisksDiffer(vm.config, cfg))
    throw new InvalidStateError(
      `VM ${name}: only NICs and disks can change while it runs; stop it to change cpus, memory or image`,
      subject,
    );
  if (!hasHotplugSlots(vm.argv, d.paths))
    throw new UnsupportedError(
      `VM ${name} was started without NIC hot-plug slots (created by an older vmlink): stop and start it once`,
      subject,
    );
  const diskSlots = await plugDisks({ ...d, vm: name }, vm, cfg, secrets, ctx);
  // The disks are recorded as they are now (under the old hash: a failure in the NICs' part is retried whole).
  const mid: StoredVm = { ...vm, config: { ...vm.config, disks: cfg.disks }, diskSlots };
  mid.argv = await d.argvOf(mid.config, vm.accel, vm.nicSlots ?? vm.config.nics.map((_, i) => i), diskSlots);
  await d.writeStored(mid);
  await plugNics(d, mid, cfg, configHash, ctx);
}
