// `storage-path-down`: a storage path the storage doctor (controller/storage-doctor.ts) found down, as a diagnosis:
// a portal a compute host cannot reach, a pool its storage host does not hold or reports problems with, a login the
// target refused. The storage doctor asked the agents; this only restates its failed checks with host and object.
import type { Diagnosis } from '../wire-observe.js';
import type { Diagnose } from './types.js';

/** The host a storage check concerns: `... from HOST` (a portal) or `... on HOST` (a pool), else the storage host. */
export function storageCheckHost(name: string): string | undefined {
  return (
    /\bfrom ([a-z][a-z0-9-]*)$/.exec(name)?.[1] ??
    /\bon ([a-z][a-z0-9-]*)\b/.exec(name)?.[1] ??
    /^storage host ([a-z][a-z0-9-]*)$/.exec(name)?.[1]
  );
}

export const storagePathDown: Diagnose = ({ storage }) =>
  storage
    .filter((c) => !c.ok)
    .map((c): Diagnosis => {
      const host = storageCheckHost(c.name);
      const object = c.name.replace(/^storage /, '');
      return {
        id: 'storage-path-down',
        severity: 'critical',
        ...(host ? { host } : {}),
        object,
        summary: `${object}: ${c.detail.split('\n')[0]!.slice(0, 300)}`,
        evidence: [`${c.name}: ${c.detail.slice(0, 1000)}`],
        fix: c.fix ?? 'start the storage target and check the path to it, then `vmlink doctor` again',
      };
    });
