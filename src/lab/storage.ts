// A lab's storage machines (`lab.storage`): namespaces on the LAN like peers, each running a vmlink agent in the
// storage role and its own servers (tgtd for iscsi pools; rpcbind + nfs-ganesha for nfs pools), each with its own
// config, state and pid files under the machine's state directory, started and stopped by verified identity.
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { NfsServer } from '../drivers/storage/nfs-server.js';
import { Tgtd } from '../drivers/storage/tgtd.js';
import type { Runner } from '../exec/runner.js';
import { labHostStateDir } from '../shared/paths.js';
import { defaultPoolPath, ISCSI_PORT } from '../shared/storage.js';
import type { LabSpec, Spec } from '../spec/schema.js';
// The plan names the same number in each iscsi pool's config, so the storage agent's `tgtadm -C N` reaches it.
import { labTgtControlPort } from '../spec/storage.js';
import { machineNs } from './names.js';

/** A storage machine of the lab. */
export type LabStorageMachine = LabSpec['storage'][number];

/** Where a storage machine's servers keep their files (beside its agent's state). */
export function labStorageDirs(lab: string, machine: string): { tgtd: string; nfs: string } {
  const base = labHostStateDir(lab, machine);
  return { tgtd: join(base, 'tgtd'), nfs: join(base, 'nfs') };
}

/**
 * Where a lab machine's agent may make pools: the default root, and the machine's own `pools` directory beside its
 * state (so that a test's or a second lab's pools need not share /var/lib/vmlink/pools).
 */
export function labPoolRootArgs(lab: string, machine: string): string[] {
  return [
    '--pool-root',
    dirname(defaultPoolPath('-')),
    '--pool-root',
    join(labHostStateDir(lab, machine), 'pools'),
  ];
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
      ...labPoolRootArgs(this.spec.name, m.name),
    ];
  }

  /** The machine's tgtd: its own control port, its portal on the machine's LAN address. */
  tgtd(m: LabStorageMachine, index: number): Tgtd {
    return new Tgtd({
      runner: this.runner,
      controlPort: labTgtControlPort(index),
      dir: labStorageDirs(this.spec.name, m.name).tgtd,
      netns: machineNs(this.spec.name, m.name),
    });
  }

  /** The machine's rpcbind + nfs-ganesha (in a mount namespace of their own inside the machine's). */
  nfs(m: LabStorageMachine): NfsServer {
    return new NfsServer({
      runner: this.runner,
      dir: labStorageDirs(this.spec.name, m.name).nfs,
      netns: machineNs(this.spec.name, m.name),
    });
  }

  /**
   * Starts whatever server of the machine is not running (idempotent): tgtd, then rpcbind and nfs-ganesha. A
   * restarted tgtd serves no targets until the storage agent's next pool step puts them back (`vmlink apply`).
   */
  async up(m: LabStorageMachine, index: number, say: (msg: string) => void): Promise<void> {
    const dirs = labStorageDirs(this.spec.name, m.name);
    for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true, mode: 0o700 });
    const tgtd = this.tgtd(m, index);
    if (!(await tgtd.running())) {
      say(
        `starting tgtd of ${m.name} (control port ${labTgtControlPort(index)}, portal ${m.address}:${ISCSI_PORT})`,
      );
      await tgtd.start();
    }
    if ((await this.nfs(m).start()) === 'started')
      say(`started rpcbind and nfs-ganesha of ${m.name} (${m.address}, NFSv3)`);
  }

  /** Stops the machine's servers, each only while it is still the process that was started. */
  async down(m: LabStorageMachine, index: number, say: (msg: string) => void): Promise<void> {
    say(`stopping the storage servers of ${m.name}`);
    await this.nfs(m).stop();
    await this.tgtd(m, index).stop();
  }
}

/**
 * The directories of the spec's pools that live on lab machines at their default place: a lab machine shares this
 * computer's filesystem, so `lab down` removes them with the machine. A pool with its own `path` is left alone.
 */
export function labPoolDirs(spec: Spec): string[] {
  const lab = spec.lab;
  if (!lab) return [];
  const machines = new Set([...lab.hosts, ...lab.storage].map((m) => m.name));
  return spec.pools.filter((p) => !p.path && machines.has(p.host)).map((p) => defaultPoolPath(p.name));
}

/** Removes pool directories (`labPoolDirs`) without following links; a missing one is fine. */
export async function removeLabPoolDirs(dirs: readonly string[]): Promise<void> {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
}
