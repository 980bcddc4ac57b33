// What a qcow2 pool directory holds, as its pool reports it: each volume's size (virtual and allocated), encryption,
// base and snapshots, from `qemu-img info` after its chain was checked; the filesystem's usage from statfs. A file
// that cannot be read is a problem of the pool, not a failure of the report.
import { lstat, statfs } from 'node:fs/promises';
import { type ObservedVolume, POOL_VOLUMES_MAX } from '../../shared/storage.js';
import type { Qcow2Volumes } from './qcow2-volumes.js';
import { snapshotsOf } from './qemu-img.js';

const MiB = 1024 * 1024;

/** What a pool's filesystem holds (statfs of its directory). */
export async function poolUsage(
  path: string,
): Promise<{ capacityMiB: number; usedMiB: number; freeMiB: number }> {
  const s = await statfs(path);
  const mib = (blocks: number) => Math.floor((blocks * s.bsize) / MiB);
  return { capacityMiB: mib(s.blocks), usedMiB: mib(s.blocks - s.bfree), freeMiB: mib(s.bavail) };
}

/** One volume as observed; undefined when it is not there. */
export async function observeVolume(
  volumes: Qcow2Volumes,
  name: string,
): Promise<ObservedVolume | undefined> {
  const f = await volumes.find(name);
  if (!f) return undefined;
  const st = await lstat(f.path);
  const allocatedMiB = Math.ceil((st.blocks * 512) / MiB);
  if (f.format === 'iso')
    return {
      name,
      format: 'iso',
      sizeMiB: Math.ceil(st.size / MiB),
      allocatedMiB,
      encrypted: false,
      snapshots: [],
    };
  const info = await volumes.checkChain(name);
  const backing = info['backing-filename'];
  return {
    name,
    format: 'qcow2',
    sizeMiB: Math.ceil(info['virtual-size'] / MiB),
    allocatedMiB,
    encrypted: info.encrypted === true,
    ...(backing ? { backingVolume: backing.slice(0, -'.qcow2'.length) } : {}),
    snapshots: snapshotsOf(info),
  };
}

/** Every volume of a pool as observed (at most `POOL_VOLUMES_MAX`), and problems with files that could not be read. */
export async function listVolumes(
  volumes: Qcow2Volumes,
  pool: string,
): Promise<{ volumes: ObservedVolume[]; problems: string[] }> {
  const names = await volumes.names();
  const problems: string[] = [];
  if (names.length > POOL_VOLUMES_MAX)
    problems.push(
      `pool ${pool} holds ${names.length} volumes; only the first ${POOL_VOLUMES_MAX} are reported`,
    );
  const out: ObservedVolume[] = [];
  for (const name of names.slice(0, POOL_VOLUMES_MAX)) {
    try {
      const v = await observeVolume(volumes, name);
      if (v) out.push(v);
    } catch (e) {
      problems.push(`volume ${name}: ${(e as Error).message.split('\n')[0]!.slice(0, 300)}`);
    }
  }
  return { volumes: out, problems };
}
