// Owner records: which host may run each VM of a cluster, with the fencing token (the record's store version) that
// the agent checks before it creates, starts or hotplugs the VM there. Records change only by compare-and-set on the
// version read, so two controllers can never both move one VM (docs/ha.md, "Ownership and fencing tokens").
import type { AgentAction } from '../agent/wire.js';
import {
  type FencingToken,
  OWNER_PREFIX,
  type OwnedVm,
  type OwnerRecord,
  OwnerRecordSchema,
  ownerKey,
} from '../shared/cluster.js';
import { InvalidStateError, VmlinkError } from '../shared/errors.js';
import { OWNER_READ_CONCURRENCY } from '../shared/limits.js';
import { Limiter } from '../shared/queue.js';
import type { OwnerHint } from '../spec/placement.js';
import type { Spec, UnplacedSpec } from '../spec/schema.js';
import type { AgentFactory, AgentPort } from './hosts.js';
import type { Store } from './store/types.js';

/** Why a VM got its owner (see shared/cluster.ts `OwnerReasons`). */
export type OwnerReason = OwnerRecord['reason'];

/** Owner records over the Store (etcd in a cluster; SQLite works too: one controller, tokens the agent ignores). */
export class OwnershipStore {
  constructor(private readonly store: Store) {}

  /** Every owner record with its token, by VM name order. A record that does not parse is skipped (and named). */
  async list(): Promise<OwnedVm[]> {
    const rows = await this.store.listVersioned<unknown>(OWNER_PREFIX);
    return rows.flatMap((r) => {
      const parsed = OwnerRecordSchema.safeParse(r.value);
      return parsed.success && r.key === ownerKey(parsed.data.vm)
        ? [{ ...parsed.data, token: r.version }]
        : [];
    });
  }

  /** The owner record of `vm`, or undefined. */
  async get(vm: string): Promise<OwnedVm | undefined> {
    const r = await this.store.getVersioned<unknown>(ownerKey(vm));
    if (!r) return undefined;
    const parsed = OwnerRecordSchema.safeParse(r.value);
    if (!parsed.success || parsed.data.vm !== vm)
      throw new VmlinkError('internal', `the owner record of vm ${vm} does not parse`, {
        subject: `vm/${vm}`,
      });
    return { ...parsed.data, token: r.version };
  }

  /** Owner records as placement reads them (`placementFromOwners`). */
  async hints(): Promise<Record<string, OwnerHint>> {
    return hintsOf(await this.list());
  }

  /**
   * Gives `vm` to `host` if its record is still at token `expected` (`null`: only if it has none). Returns the new
   * record with its (larger) token, or undefined when the record changed meanwhile: nothing was written.
   */
  async assign(
    vm: string,
    host: string,
    reason: OwnerReason,
    expected: FencingToken | null,
    specHost?: string,
    from?: string,
  ): Promise<OwnedVm | undefined> {
    const record: OwnerRecord = {
      vm,
      host,
      ...(specHost !== undefined ? { specHost } : {}),
      reason,
      since: new Date().toISOString(),
      ...(from !== undefined && from !== host ? { from } : {}),
    };
    const token = await this.store.putIf(ownerKey(vm), OwnerRecordSchema.parse(record), expected);
    return token === undefined ? undefined : { ...record, token };
  }

  /** Removes the record of `vm` (at token `expected` when given); returns whether one was removed. */
  async release(vm: string, expected?: FencingToken): Promise<boolean> {
    const cur = expected ?? (await this.store.getVersioned(ownerKey(vm)))?.version;
    return cur === undefined ? false : this.store.deleteIf(ownerKey(vm), cur);
  }
}

/** Owner records by VM name, as placement reads them. */
export function hintsOf(owners: readonly OwnedVm[]): Record<string, OwnerHint> {
  return Object.fromEntries(owners.map((o) => [o.vm, { host: o.host, specHost: o.specHost }]));
}

/** A placed spec as it was before placement (each VM's host = the spec's own `specHost`, if any). */
export function unplacedView(spec: Spec): UnplacedSpec {
  return {
    ...spec,
    vms: spec.vms.map(({ placedBy, host, specHost, ...vm }) =>
      specHost !== undefined ? { ...vm, host: specHost } : vm,
    ),
  };
}

/** The VM an action creates, starts or hotplugs (the ones an agent in a cluster checks a token for). */
export function fencedVmOf(action: AgentAction): string | undefined {
  switch (action.kind) {
    case 'vm.create':
    case 'vm.hotplug':
      return action.vm.name;
    case 'vm.start':
      return action.name;
    default:
      return undefined;
  }
}

/**
 * `agents` whose VM actions carry the VM's fencing token (`fence: { token }`) from its owner record, read as the
 * action leaves, in a cluster (a spec with `cluster:`); elsewhere they pass unchanged. An action for a host the
 * record does not name, or for a VM without a record, is refused here (InvalidStateError): the agent would refuse
 * it anyway, this says where the VM is owned.
 */
export function withOwnership(agents: AgentFactory, ownership: OwnershipStore): AgentFactory {
  // One apply of a big fleet sends every host's steps at once: 1,000 hosts x 20 VMs made 20,000 owner reads at once,
  // and etcd's answers then outran its request deadline. Bounded, they queue here instead.
  const reads = new Limiter(OWNER_READ_CONCURRENCY);
  return (spec, host) => {
    const agent = agents(spec, host);
    if (!spec.cluster) return agent;
    const attach = async (action: AgentAction): Promise<AgentAction> => {
      const vm = fencedVmOf(action);
      if (vm === undefined) return action;
      const owner = await reads.run(() => ownership.get(vm));
      if (!owner)
        throw new InvalidStateError(
          `vm ${vm} has no owner record, so no host may start it; apply the spec to place it`,
          `vm/${vm}`,
        );
      if (owner.host !== host)
        throw new InvalidStateError(
          `vm ${vm} is owned by ${owner.host} (token ${owner.token}, ${owner.reason}), not ${host}: it may run only there`,
          `vm/${vm}`,
        );
      return { ...action, fence: { token: owner.token } } as AgentAction;
    };
    const wrapped: AgentPort = Object.create(agent);
    wrapped.act = async (action, ...rest) => agent.act(await attach(action), ...rest);
    wrapped.actBatch = async (actions) => agent.actBatch(await Promise.all(actions.map(attach)));
    return wrapped;
  };
}

/** An owner record apply writes: a VM the spec places anew, or whose spec host changed. */
export interface OwnerWrite {
  vm: string;
  host: string;
  reason: OwnerReason;
  expected: FencingToken | null;
  specHost?: string;
  from?: string;
}

/** Where a cluster spec's VMs run: the placed spec, the records to write, and the plan's lines about placement. */
export interface ClusterPlacement {
  spec: Spec;
  writes: OwnerWrite[];
  /** Owner records of VMs the spec no longer has (released once their deletion is applied). */
  dropped: OwnedVm[];
  /** Each VM not placed by the spec's own host, one line each, e.g. `@ vm web on host1 (HA moved it from host2)`. */
  lines: string[];
}

const movedBy: Record<OwnerReason, string> = {
  spec: 'the spec placed it',
  scheduler: 'the scheduler placed it',
  'ha-restart': 'HA restarted it',
  maintenance: 'maintenance moved it',
  user: 'a user moved it',
  restore: 'a restore made it',
};

/**
 * Places `placed` (the spec placed by `owners`, then its hosts, then the scheduler's choice) and says which owner
 * records apply must write: a VM keeps its record while the spec's host is unchanged; a VM the spec places (or
 * moves) gets `reason: 'spec'`; one placed by the scheduler `reason: 'scheduler'`.
 */
export function planOwners(
  placed: Spec,
  owners: readonly OwnedVm[],
  why: Readonly<Record<string, string>> = {},
): ClusterPlacement {
  const byVm = new Map(owners.map((o) => [o.vm, o]));
  const writes: OwnerWrite[] = [];
  const lines: string[] = [];
  for (const vm of placed.vms) {
    const o = byVm.get(vm.name);
    const source = vm.placedBy ?? 'spec';
    const { specHost } = vm;
    if (source === 'owner' && o) {
      if (o.reason !== 'spec')
        lines.push(`@ vm ${vm.name} on ${vm.host} (${movedBy[o.reason]}${o.from ? ` from ${o.from}` : ''})`);
      continue;
    }
    if (o && o.host === vm.host && o.specHost === specHost) continue;
    const reason: OwnerReason = source === 'scheduler' ? 'scheduler' : 'spec';
    writes.push({
      vm: vm.name,
      host: vm.host,
      reason,
      expected: o?.token ?? null,
      ...(specHost !== undefined ? { specHost } : {}),
      ...(o && o.host !== vm.host ? { from: o.host } : {}),
    });
    if (reason === 'scheduler')
      lines.push(
        `@ vm ${vm.name} on ${vm.host} (placed by the scheduler${why[vm.name] ? `: ${why[vm.name]}` : ''})`,
      );
    else if (o && o.host !== vm.host)
      lines.push(`@ vm ${vm.name} on ${vm.host} (the spec moves it from ${o.host})`);
  }
  const names = new Set(placed.vms.map((v) => v.name));
  // Copies made by a restore belong to no spec: `restore discard` (or the restore test's end) releases them.
  const dropped = owners.filter((o) => !names.has(o.vm) && o.reason !== 'restore');
  return { spec: placed, writes, dropped, lines };
}
