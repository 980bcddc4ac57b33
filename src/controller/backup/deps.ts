// What the controller's backup parts share: the store, the applied spec, agents, keys, host states, the clock, and the
// per-VM lock (one backup, restore or restore test of a VM at a time, whether the API or the manager started it).
import { ConflictError, InvalidRequestError, NotFoundError } from '../../shared/errors.js';
import type { Spec, VmSpec } from '../../spec/schema.js';
import type { BackupPolicySpec } from '../../spec/schema-backup.js';
import type { AgentFactory } from '../hosts.js';
import type { OwnershipStore } from '../ownership.js';
import type { Store } from '../store/types.js';
import type { HostStates, PollOptions } from './agents.js';
import type { BackupKeys } from './keys.js';

/** One backup, restore or restore test per VM at a time. */
export class VmLocks {
  private readonly held = new Map<string, string>();

  /** Takes `vm`'s lock for `what`; a ConflictError names what holds it. Returns the release. */
  acquire(vm: string, what: string): () => void {
    const holder = this.held.get(vm);
    if (holder)
      throw new ConflictError(`vm ${vm} is busy: ${holder} runs; try again when it has ended`, `vm/${vm}`);
    this.held.set(vm, what);
    return () => {
      if (this.held.get(vm) === what) this.held.delete(vm);
    };
  }

  /** Whether `vm` is locked now. */
  busy(vm: string): boolean {
    return this.held.has(vm);
  }
}

/** The parts every backup operation uses. */
export interface BackupDeps {
  store: Store;
  /** The applied spec (placed), or undefined before the first apply. */
  spec: () => Promise<Spec | undefined>;
  agents: AgentFactory;
  keys: BackupKeys;
  hosts: HostStates;
  /** Where `vm` runs now when an owner record says so (a cluster), else undefined (the spec's host). */
  ownerHost?: (vm: string) => Promise<string | undefined>;
  /** The cluster's owner records: a copy made by a restore gets one before it is created (a cluster spec only). */
  ownership?: OwnershipStore;
  /** The values of secrets a stopped VM's disks need (LUKS keys, CHAP passwords), for one agent request. */
  secretValues?: (names: string[]) => Promise<Array<{ name: string; value: string }>>;
  locks: VmLocks;
  now: () => Date;
  /** Polling of agents' jobs (tests: a short period, a fake sleep). */
  poll?: Pick<PollOptions, 'pollMs' | 'timeoutMs' | 'sleep'>;
}

/** The applied spec, or a refusal saying to apply one. */
export async function appliedSpec(d: BackupDeps): Promise<Spec> {
  const spec = await d.spec();
  if (!spec)
    throw new InvalidRequestError(
      'no spec has been applied yet: apply one with backupStores and backups first',
    );
  return spec;
}

/** The spec's VM `name`. */
export function vmOf(spec: Spec, name: string): VmSpec {
  const vm = spec.vms.find((v) => v.name === name);
  if (!vm) throw new NotFoundError('vm', name);
  return vm;
}

/** The spec's policy `name`. */
export function policyOf(spec: Spec, name: string): BackupPolicySpec {
  const p = spec.backups.find((x) => x.name === name);
  if (!p)
    throw new NotFoundError(
      'backup policy',
      `${name} (the applied spec has ${spec.backups.length ? spec.backups.map((x) => x.name).join(', ') : 'none'})`,
    );
  return p;
}

/** The policy for a backup of `vm`: `name` when given, else the one policy naming the VM. */
export function pickPolicy(spec: Spec, vm: string, name?: string): BackupPolicySpec {
  if (name) return policyOf(spec, name);
  const naming = spec.backups.filter((p) => p.vms.includes(vm));
  if (naming.length === 1) return naming[0]!;
  if (!naming.length)
    throw new InvalidRequestError(
      `no backup policy names vm ${vm}: add it to a policy's vms (backups: in the spec) or pass --policy`,
      `vm/${vm}`,
    );
  throw new InvalidRequestError(
    `vm ${vm} is in ${naming.length} backup policies (${naming.map((p) => p.name).join(', ')}): pass --policy`,
    `vm/${vm}`,
  );
}

/** Where `vm` runs: its owner record's host in a cluster, else the spec's. */
export async function hostOfVm(d: BackupDeps, spec: Spec, vm: string): Promise<string> {
  return (await d.ownerHost?.(vm)) ?? vmOf(spec, vm).host;
}
