// A VM's boot image made ready before its QEMU can use it: the test guest's kernel and initrd readable by the VM's
// uid, or a copy-on-write overlay of the user's base image plus its cloud-init seed.

import { mkdir, stat } from 'node:fs/promises';
import type { Runner } from '../../../exec/runner.js';
import { InvalidRequestError, UnsupportedError } from '../../../shared/errors.js';
import type { VmConfig } from '../../../shared/model.js';
import type { OpContext } from '../../network/types.js';
import type { StorageDriver } from '../../storage/types.js';
import { buildSeedFiles, writeSeedIso } from './cloudinit.js';
import type { VmPaths } from './cmdline.js';
import type { VmIdentity } from './identity.js';
import { userCanAccess } from './launcher.js';
import { prepareVmDirs } from './vm-files.js';

/** Who reads the image: the VM's uid with its groups, named for errors. */
export interface ImageReader {
  access: { uid: number; groups: number[] };
  owner: { uid: number; gid: number };
  /** e.g. "VM web1's QEMU (uid 1879048192)". */
  who: string;
}

/**
 * The test guest's kernel: its PVH ELF `vmlinux` where the image has one (QEMU boots it without the bzImage's
 * decompressor, seconds faster under TCG: src/guest/kernel-elf.ts), else the bzImage `vmlinuz`.
 */
export async function testGuestKernel(imagesDir: string): Promise<string> {
  const elf = `${imagesDir}/test-guest/vmlinux`;
  return (await stat(elf).then(
    (s) => s.isFile(),
    () => false,
  ))
    ? elf
    : `${imagesDir}/test-guest/vmlinuz`;
}

/** Checks (test guest) or prepares (qcow2 overlay and seed) VM `cfg`'s boot image; errors say how to fix it. */
export async function prepareVmImage(
  deps: { runner: Runner; storage: StorageDriver; imagesDir: string; qemuUserName: string },
  cfg: VmConfig,
  paths: VmPaths,
  reader: ImageReader,
  ctx?: OpContext,
): Promise<void> {
  const { access, owner, who } = reader;
  if (cfg.image.kind === 'test-guest') {
    for (const f of ['vmlinuz', 'initrd.img']) {
      const path = `${deps.imagesDir}/test-guest/${f}`;
      if (!userCanAccess(path, access, 'r')) {
        throw new UnsupportedError(
          `${path} is missing or not readable by ${who}: build the test guest (npm run setup)`,
        );
      }
    }
    return;
  }
  if (cfg.image.kind === 'volume') {
    // Its root is the pool volume itself (or the controller's clone `<vm>-root`): nothing of its own to make.
    if (!cfg.rootSource)
      throw new InvalidRequestError(
        `VM ${cfg.name} boots from volume ${cfg.image.pool}/${cfg.image.volume}, but the step does not say how this host opens it (rootSource)`,
        `vm/${cfg.name}`,
      );
    return;
  }
  if (!userCanAccess(cfg.image.path, access, 'r')) {
    throw new UnsupportedError(
      `base image ${cfg.image.path} is missing or not readable by ${who}: chmod o+r, or give it group ${deps.qemuUserName}`,
    );
  }
  await deps.storage.createOverlay({ name: 'root', dir: paths.vmDir, base: cfg.image.path, owner }, ctx);
  await writeSeedIso(deps.runner, buildSeedFiles(cfg), paths.seedDir, paths.seedIso);
}

/**
 * Makes VM `cfg`'s directory (checking its uid can reach it through `stateDir`) and its boot image ready.
 */
export async function prepareVmDir(
  deps: { stateDir: string; runner: Runner; storage: StorageDriver; imagesDir: string; qemuUserName: string },
  cfg: VmConfig,
  paths: VmPaths,
  id: VmIdentity,
  ctx?: OpContext,
): Promise<void> {
  const who = `VM ${cfg.name}'s QEMU (uid ${id.uid})`;
  const access = { uid: id.uid, groups: [id.gid, ...id.groups] };
  await mkdir(`${deps.stateDir}/vms`, { recursive: true, mode: 0o711 });
  // QEMU's jail binds its directory from the host: the agent still opens it by path there.
  if (!userCanAccess(`${deps.stateDir}/vms`, access, 'x')) {
    throw new UnsupportedError(
      `${deps.stateDir}/vms is not traversable by ${who}: give ${deps.stateDir} and its parents o+x (chmod 711)`,
    );
  }
  await prepareVmDirs(paths, id);
  await prepareVmImage(deps, cfg, paths, { access, owner: { uid: id.uid, gid: id.gid }, who }, ctx);
}
