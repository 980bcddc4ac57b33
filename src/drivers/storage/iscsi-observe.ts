// What `listPools` reports of one iscsi pool: its volumes (size, allocation, sessions, fence) and its problems
// (tgtd not answering, a directory, target, ACL or CHAP account not as wanted).
import { stat } from 'node:fs/promises';
import type { ObservedPool, ObservedVolume, PoolConfig, VolumeFence } from '../../shared/storage.js';
import { type FenceStateStore, fencedAcl, volumeSessions } from './iscsi-fence.js';
import { targetProblems, type WantedTarget } from './iscsi-targets.js';
import { exists, MiB, volumeFile, volumeNames } from './iscsi-volume-files.js';
import { poolUsage } from './qcow2-listing.js';
import type { TgtClient } from './tgt-client.js';
import type { TgtTarget } from './tgt-show.js';

/** What observing a pool uses of the backend. */
export interface IscsiObserveHost {
  client(pool: PoolConfig): TgtClient;
  fences: FenceStateStore;
  /** `volume`'s target among `targets`. */
  target(pool: PoolConfig, targets: readonly TgtTarget[], volume: string): TgtTarget | undefined;
  /** What `volume`'s target should look like, its fence (if any) included. */
  want(pool: PoolConfig, volume: string, fence: VolumeFence | undefined): WantedTarget;
}

/** Pool `pool` as tgtd and its directory show it, with live checks. */
export async function observeIscsiPool(
  host: IscsiObserveHost,
  pool: PoolConfig,
  configHash: string,
): Promise<ObservedPool> {
  const problems: string[] = [];
  let targets: TgtTarget[] | undefined;
  try {
    targets = await host.client(pool).showTargets();
  } catch (e) {
    problems.push(`tgtd is not answering: ${(e as Error).message}`);
  }
  const volumes: ObservedVolume[] = [];
  let usage = { capacityMiB: 0, usedMiB: 0, freeMiB: 0 };
  const fences = await host.fences.read(pool.name);
  if (!(await exists(pool.path))) problems.push(`directory ${pool.path} is missing`);
  else {
    usage = await poolUsage(pool.path);
    for (const name of await volumeNames(pool)) {
      const file = volumeFile(pool, name);
      const s = await stat(file).catch(() => undefined);
      if (!s) continue; // deleted meanwhile
      const fence = fences.get(name);
      const t = targets ? host.target(pool, targets, name) : undefined;
      const sessions = volumeSessions(t);
      volumes.push({
        name,
        format: 'raw',
        sizeMiB: Math.floor(s.size / MiB),
        allocatedMiB: Math.ceil((s.blocks * 512) / MiB),
        encrypted: false,
        snapshots: [],
        ...(sessions.length ? { sessions } : {}),
        ...(fence ? { fence } : {}),
      });
      if (fence && fencedAcl(pool, fence) === null)
        problems.push(
          `volume ${name} is fenced to ${fence.host} (${fence.address}), which is outside the pool's clients: its target lets nobody in until it is fenced again`,
        );
      if (targets) problems.push(...targetProblems(host.want(pool, name, fence), t));
    }
  }
  if (pool.chap && targets) {
    const accounts = await host
      .client(pool)
      .showAccounts()
      .catch(() => undefined);
    if (accounts && !accounts.includes(pool.chap.user))
      problems.push(`CHAP account ${pool.chap.user} is missing from tgtd`);
  }
  return { name: pool.name, type: 'iscsi', configHash, problems, config: pool, ...usage, volumes };
}
