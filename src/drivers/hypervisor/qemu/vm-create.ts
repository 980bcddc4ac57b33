// Creating (or reconfiguring, while stopped) a VM's directory, disks and stored command line; and that command line
// for this host. Split out of driver.ts.
import type { Runner } from '../../../exec/runner.js';
import { InvalidRequestError, InvalidStateError, UnsupportedError } from '../../../shared/errors.js';
import type { VmConfig } from '../../../shared/model.js';
import { NAME_PATTERN } from '../../../spec/schema.js';
import type { OpContext } from '../../network/types.js';
import type { StorageDriver } from '../../storage/types.js';
import type { SecretValues } from '../types.js';
import { assignNicSlots, buildQemuArgv, type CmdlineInput, type VmPaths } from './cmdline.js';
import { type ConfidentialHost, launchFor } from './confidential.js';
import { assertEncryptionKept, diskKeys } from './disk-keys.js';
import { makeDirDisk } from './disk-plug.js';
import { assignDiskSlots } from './disk-slots.js';
import type { ArgvBuilder, VmAccess } from './vm-access.js';
import { ownVmFiles } from './vm-files.js';
import { prepareVmDir, testGuestKernel } from './vm-image.js';

/** What the command line needs from the driver. */
export interface ArgvDeps {
  paths: VmPaths;
  imagesDir: string;
  qemuBinary: string;
  confidentialHost: () => Promise<ConfidentialHost>;
}

/** The command line of `cfg` on this host (a confidential VM gets the host's firmware and C-bit). */
export async function vmArgv(
  d: ArgvDeps,
  cfg: VmConfig,
  accel: 'kvm' | 'tcg',
  nicSlots: readonly number[] | undefined,
  diskSlots?: readonly number[],
): Promise<string[]> {
  const input: CmdlineInput = {
    config: cfg,
    accel,
    paths: d.paths,
    imagesDir: d.imagesDir,
    qemuBinary: d.qemuBinary,
    ...(cfg.image.kind === 'test-guest' ? { testGuestKernel: await testGuestKernel(d.imagesDir) } : {}),
    ...(nicSlots ? { nicSlots } : {}),
    ...(diskSlots ? { diskSlots } : {}),
    ...(cfg.confidential ? { confidential: launchFor(await d.confidentialHost(), cfg.confidential) } : {}),
  };
  try {
    return buildQemuArgv(input);
  } catch (e) {
    // The plan refuses such a VM first (admission); this is the agent's own check, naming the VM.
    if (e instanceof UnsupportedError)
      throw new UnsupportedError(`VM ${cfg.name}: ${e.message}`, `vm/${cfg.name}`);
    throw e;
  }
}

/** What a create needs from the driver (called under the VM's lock). */
export interface CreateDeps {
  runner: Runner;
  stateDir: string;
  storage: StorageDriver;
  imagesDir: string;
  qemuUserName: string;
  vms: VmAccess;
  accelerator: () => Promise<{ accelerator: 'kvm' | 'tcg' }>;
  argvOf: ArgvBuilder;
}

/** Whether `cfg.name` is a valid VM name; an InvalidRequestError when not (checked before the lock is taken). */
export function assertVmName(cfg: VmConfig): void {
  if (!NAME_PATTERN.test(cfg.name))
    throw new InvalidRequestError(`VM name ${JSON.stringify(cfg.name)} is invalid`, cfg.name);
}

/** Creates VM `cfg.name` (its directory, image, disks, stored config); a stopped VM with another hash is reconfigured. */
export async function createVm(
  d: CreateDeps,
  cfg: VmConfig,
  configHash: string,
  ctx?: OpContext,
  secrets?: SecretValues,
): Promise<void> {
  const p = d.vms.paths(cfg.name);
  const old = await d.vms.stored(cfg.name);
  if (old?.configHash === configHash) return;
  if (old && (await d.vms.livePid(cfg.name)) !== undefined) {
    throw new InvalidStateError(`reconfiguring VM ${cfg.name} requires it stopped`, `vm/${cfg.name}`);
  }
  if (old) assertEncryptionKept(old.config, cfg);
  const keys = diskKeys(cfg, secrets);
  const id = await d.vms.identity(cfg.name);
  const owner = { uid: id.uid, gid: id.gid };
  ctx?.progress?.(`creating VM ${cfg.name} in ${p.vmDir}`);
  await prepareVmDir(
    {
      stateDir: d.stateDir,
      runner: d.runner,
      storage: d.storage,
      imagesDir: d.imagesDir,
      qemuUserName: d.qemuUserName,
    },
    cfg,
    p,
    id,
    ctx,
  );
  const { accelerator } = await d.accelerator();
  // NICs the VM had keep their PCI slots across a reconfiguration.
  const nicSlots = assignNicSlots(cfg.nics, old && { nics: old.config.nics, slots: old.nicSlots });
  const diskSlots = assignDiskSlots(cfg.disks, old && { disks: old.config.disks, slots: old.diskSlots });
  // Before any disk is made: a VM this host cannot launch (confidential without support) leaves nothing.
  const argv = await d.argvOf(cfg, accelerator, nicSlots, diskSlots);
  for (const [i, disk] of cfg.disks.entries()) await makeDirDisk(d.storage, p, disk, owner, keys.get(i), ctx);
  await ownVmFiles(p, cfg, id);
  await d.vms.writeStored(cfg.name, {
    config: cfg,
    configHash,
    accel: accelerator,
    argv,
    nicSlots,
    diskSlots,
  });
}
