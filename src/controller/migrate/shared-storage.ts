// A live migration's shared disks (docs/mobility.md "Shared storage"). iSCSI and NFS volumes stay where they are: the
// target's QEMU opens them while the source's still has them open (the guest runs there until the switch-over), and
// the source's QEMU lets go of them when its VM is removed. What moves is the iSCSI fence (docs/ha.md): a volume
// fenced to the source alone would refuse the target's login, and one left fenced there after the move would cut off
// the VM's new host at its next login. So, under the owner record's token:
//   before the stream   fenced to the source with the target let in beside it (`peer`), no session closed;
//   after the resume    fenced to the target alone under its new token: the source's sessions closed (its QEMU is
//                       paused with its disks inactivated, and about to be removed);
//   on a rollback       fenced to the source alone again (the token the record has then).
// NFS and dir pools cannot be fenced at the storage end (POOL_FEATURES.fence): they are skipped with an event.
import type { OwnedVm } from '../../shared/cluster.js';
import type { Spec } from '../../spec/schema.js';
import type { AgentFactory } from '../hosts.js';
import { fenceVmVolumes, type VolumeFenceOutcome, vmFenceTargets } from '../storage-fence.js';
import type { Store } from '../store/types.js';

/** What the migration's storage steps need. */
export interface MigrationStorageDeps {
  agents: AgentFactory;
  /** Where fence events go (none: no events). */
  events?: Pick<Store, 'appendEvent'>;
}

/** What a migration did to its VM's shared volumes (the report's `storage`). */
export interface MigrationStorageReport {
  /** `pool/volume` of each iscsi volume now fenced to the target. */
  fenced: string[];
  /** `pool/volume` of each shared volume that cannot be fenced (nfs), with why. */
  skipped: string[];
  /** Why the fence could not be moved to the target (the VM runs there all the same). */
  error?: string;
}

/** The fence steps of one migration of `vm`; a VM without iscsi volumes makes every step a no-op. */
export class MigrationStorage {
  /** Whether the VM has volumes fenced at the storage end (iscsi). */
  readonly fences: boolean;

  constructor(
    private readonly d: MigrationStorageDeps,
    private readonly spec: Spec,
    private readonly vm: string,
  ) {
    const v = spec.vms.find((x) => x.name === vm);
    this.fences = v ? vmFenceTargets(spec, v).fence.length > 0 : false;
  }

  private fence(owner: OwnedVm, peer?: string): Promise<VolumeFenceOutcome> {
    return fenceVmVolumes(
      this.spec,
      this.vm,
      owner,
      { agents: this.d.agents, ...(this.d.events ? { store: this.d.events } : {}) },
      peer,
    );
  }

  /** Before the target prepares: its host may log in beside `owner`'s (the source) under the record's token. */
  async openTo(owner: OwnedVm, to: string): Promise<void> {
    if (this.fences) await this.fence(owner, to);
  }

  /**
   * The volumes fenced to `owner` alone: after the resume the target (its new token), after a rollback the source.
   * Never throws: a failure is returned in the report (and was recorded as an event).
   */
  async narrowTo(owner: OwnedVm): Promise<MigrationStorageReport> {
    if (!this.fences) {
      const v = this.spec.vms.find((x) => x.name === this.vm);
      const skipped = v ? vmFenceTargets(this.spec, v).skip.map((s) => `${s.pool}/${s.volume}`) : [];
      return { fenced: [], skipped };
    }
    try {
      const o = await this.fence(owner);
      return {
        fenced: o.fenced.map((t) => `${t.pool}/${t.volume}`),
        skipped: o.skipped.map((s) => `${s.pool}/${s.volume}`),
      };
    } catch (e) {
      return { fenced: [], skipped: [], error: (e as Error).message };
    }
  }
}
