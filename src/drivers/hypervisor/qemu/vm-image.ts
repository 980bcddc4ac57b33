// A VM's boot image made ready before its QEMU can use it: the test guest's kernel and initrd readable by the VM's
// uid, or a copy-on-write overlay of the user's base image plus its cloud-init seed.
import type { Runner } from '../../../exec/runner.js';
import { UnsupportedError } from '../../../shared/errors.js';
import type { VmConfig } from '../../../shared/model.js';
import type { OpContext } from '../../network/types.js';
import type { StorageDriver } from '../../storage/types.js';
import { buildSeedFiles, writeSeedIso } from './cloudinit.js';
import type { VmPaths } from './cmdline.js';
import { userCanAccess } from './launcher.js';

/** Who reads the image: the VM's uid with its groups, named for errors. */
export interface ImageReader {
  access: { uid: number; groups: number[] };
  owner: { uid: number; gid: number };
  /** e.g. "VM web1's QEMU (uid 1879048192)". */
  who: string;
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
    throw new UnsupportedError(
      `VM ${cfg.name}: booting from a pool volume is not supported by this agent yet`,
    );
  }
  if (!userCanAccess(cfg.image.path, access, 'r')) {
    throw new UnsupportedError(
      `base image ${cfg.image.path} is missing or not readable by ${who}: chmod o+r, or give it group ${deps.qemuUserName}`,
    );
  }
  await deps.storage.createOverlay({ name: 'root', dir: paths.vmDir, base: cfg.image.path, owner }, ctx);
  await writeSeedIso(deps.runner, buildSeedFiles(cfg), paths.seedDir, paths.seedIso);
}
