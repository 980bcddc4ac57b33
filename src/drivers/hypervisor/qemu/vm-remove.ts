// Removing a VM's directory after its QEMU is stopped, and freeing its uid. Split out of driver.ts.
import { stat } from 'node:fs/promises';
import { removeTree } from '../../../shared/safe-file.js';
import type { OpContext } from '../../network/types.js';
import type { VmPaths } from './cmdline.js';
import { reclaimRunDir } from './vm-files.js';

/** Stops VM `name` (`stop`, forced, under the caller's lock), removes its directory and frees its ids (`free`). */
export async function removeVm(
  name: string,
  p: VmPaths,
  stop: () => Promise<unknown>,
  free: (name: string) => Promise<void>,
  ctx?: OpContext,
): Promise<void> {
  if (!(await exists(p.vmDir))) {
    await free(name); // a create that failed before its directory existed
    return;
  }
  await stop();
  ctx?.progress?.(`removing ${p.vmDir}`);
  // With QEMU gone no process of the VM's uid is left; taking its run directory back means none could
  // reach inside again while the tree is walked (a swapped link is then removed, never followed).
  await reclaimRunDir(p);
  await removeTree(p.vmDir);
  await free(name);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
