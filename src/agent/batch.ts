// A batch of actions on one host (a phase's steps): runs of the same kind are carried out together where the driver
// has a bulk form (new networks, VM ports, tap removal) or can run side by side (VM starts), with one look at the
// host per run instead of one per action. The outcome is still per action, in order, and the batch stops after the
// group holding the first failure; within a group run side by side (VM directories, VM starts) every action runs and
// keeps its own outcome, so a failure there does not hide what its neighbours did.
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import type { ItemResult, NetworkDriver, OpContext, PortConfig } from '../drivers/network/types.js';
import { InvalidStateError } from '../shared/errors.js';
import { VM_CREATE_CONCURRENCY, VM_START_CONCURRENCY } from '../shared/limits.js';
import { log } from '../shared/log.js';
import type { NetworkBackend, NicConfig, VmConfig } from '../shared/model.js';
import { settleLimited } from '../shared/queue.js';
import { assertPortGroupsSupported } from './security-groups.js';
import type { AgentAction } from './wire.js';

/** What a batch needs of the agent. */
export interface BatchHost {
  networks: Partial<Record<NetworkBackend, NetworkDriver>>;
  hypervisor: HypervisorDriver;
  /** Carries out one action the way `POST /v1/actions` does (the agent's own serial queue already held). */
  one(action: AgentAction, ctx: OpContext): Promise<void>;
  /** The VM config to create for `want`, given the config it has now (see `keepLegacyTaps`). */
  keepTaps(want: VmConfig, before: VmConfig | undefined): VmConfig;
  /** The port of a NIC. */
  port(nic: NicConfig): PortConfig;
}

type Of<K extends AgentAction['kind']> = Extract<AgentAction, { kind: K }>;

/** Runs `actions` in order, grouping consecutive ones of a kind; stops after the first failing action. */
export async function runBatch(
  host: BatchHost,
  actions: readonly AgentAction[],
  ctx: OpContext = {},
): Promise<ItemResult[]> {
  const results: ItemResult[] = [];
  for (let i = 0; i < actions.length; ) {
    const kind = groupKey(actions[i]!);
    let j = i + 1;
    while (j < actions.length && groupKey(actions[j]!) === kind) j++;
    const group = actions.slice(i, j);
    const done = await runGroup(host, group, ctx);
    results.push(...done);
    if (done.length < group.length || done.some((r) => !r.ok)) break;
    i = j;
  }
  return results;
}

/** Actions that may run together: same kind (and, for networks, same backend). */
function groupKey(a: AgentAction): string {
  return a.kind === 'network.ensure' ? `${a.kind}:${a.network.backend ?? 'linux'}` : a.kind;
}

async function runGroup(
  host: BatchHost,
  group: readonly AgentAction[],
  ctx: OpContext,
): Promise<ItemResult[]> {
  const first = group[0]!;
  if (group.length > 1) {
    if (first.kind === 'network.ensure') {
      const driver = host.networks[first.network.backend ?? 'linux'];
      if (driver?.ensureNetworks)
        return driver.ensureNetworks(
          (group as Of<'network.ensure'>[]).map((a) => ({ cfg: a.network, configHash: a.configHash })),
          ctx,
        );
    }
    if (first.kind === 'vm.create') return createVms(host, group as Of<'vm.create'>[], ctx);
    if (first.kind === 'vm.start') return startVms(host, group as Of<'vm.start'>[], ctx);
    if (first.kind === 'vm.delete') return deleteVms(host, group as Of<'vm.delete'>[], ctx);
    if (first.kind === 'network.delete') return deleteNetworks(host, group as Of<'network.delete'>[], ctx);
  }
  return oneByOne(host, group, ctx);
}

async function oneByOne(
  host: BatchHost,
  group: readonly AgentAction[],
  ctx: OpContext,
): Promise<ItemResult[]> {
  const results: ItemResult[] = [];
  for (const a of group) {
    try {
      await host.one(a, ctx);
      results.push({ ok: true });
    } catch (error) {
      results.push({ ok: false, error });
      break;
    }
  }
  return results;
}

/**
 * Creates (or reconfigures, when stopped) several VMs: their ports in one bulk call per backend, then each VM's
 * directory and config, several at once (each keeps its outcome). A failed bulk call has left nothing, and the group
 * goes one by one to name the culprit.
 */
async function createVms(host: BatchHost, group: Of<'vm.create'>[], ctx: OpContext): Promise<ItemResult[]> {
  const { hypervisor } = host;
  const observed = new Map((await hypervisor.list()).map((v) => [v.name, v]));
  const plans: Array<{ action: Of<'vm.create'>; vm: VmConfig; before: VmConfig | undefined }> = [];
  for (const action of group) {
    const existing = observed.get(action.vm.name);
    // A running VM's reconfiguration is refused by the one-by-one path, which says why: stop the bulk part here.
    if (
      existing &&
      existing.configHash !== action.configHash &&
      existing.state !== 'stopped' &&
      existing.state !== 'crashed'
    )
      break;
    const before = existing ? await hypervisor.config(action.vm.name) : undefined;
    const vm = existing?.state === 'running' ? host.keepTaps(action.vm, before) : action.vm;
    plans.push({ action, vm, before });
  }
  if (plans.length < 2) return oneByOne(host, group, ctx);
  try {
    await ensurePortsTogether(
      host,
      plans.flatMap((p) => p.vm.nics),
      ctx,
    );
  } catch (e) {
    log.warn({ vms: plans.length, err: (e as Error).message }, 'port batch failed; creating VMs one by one');
    return oneByOne(host, group, ctx);
  }
  // Each VM's directory and config, side by side (the hypervisor serialises per VM); every one runs.
  const created = await settleLimited(plans, VM_CREATE_CONCURRENCY, ({ action, vm }) =>
    hypervisor.create(vm, action.configHash, ctx, action.secrets),
  );
  const results: ItemResult[] = created.map((c) =>
    c.status === 'fulfilled' ? { ok: true } : { ok: false, error: c.reason },
  );
  // Ports of NICs the new configurations no longer have.
  const stale = plans.flatMap(({ vm, before }, i) => {
    if (!results[i]!.ok) return [];
    const kept = new Set(vm.nics.map((n) => n.tap));
    return (before?.nics ?? []).filter((n) => !kept.has(n.tap));
  });
  await deletePortsTogether(host, stale, ctx);
  const allOk = !results.some((r) => !r.ok);
  return allOk && plans.length < group.length
    ? [...results, ...(await oneByOne(host, group.slice(plans.length), ctx))]
    : results;
}

/** Starts VMs side by side, at most `VM_START_CONCURRENCY` at once; every start runs, each keeps its outcome. */
async function startVms(host: BatchHost, group: Of<'vm.start'>[], ctx: OpContext): Promise<ItemResult[]> {
  const settled = await settleLimited(group, VM_START_CONCURRENCY, (a) => host.one(a, ctx));
  return settled.map((s) => (s.status === 'fulfilled' ? { ok: true } : { ok: false, error: s.reason }));
}

/** Deletes VMs one after another, then all their ports together (one by one if that fails, to name the VM). */
async function deleteVms(host: BatchHost, group: Of<'vm.delete'>[], ctx: OpContext): Promise<ItemResult[]> {
  const results: ItemResult[] = [];
  const ports: NicConfig[][] = [];
  for (const a of group) {
    try {
      const cfg = await host.hypervisor.config(a.name);
      await host.hypervisor.delete(a.name, ctx);
      ports.push(cfg?.nics ?? []);
      results.push({ ok: true });
    } catch (error) {
      results.push({ ok: false, error });
      break;
    }
  }
  try {
    await deletePortsTogether(host, ports.flat(), ctx);
  } catch {
    for (const [i, nics] of ports.entries()) {
      try {
        for (const n of nics) await host.networks[n.backend ?? 'linux']?.deletePort(n.tap, ctx);
      } catch (error) {
        return [...results.slice(0, i), { ok: false, error }];
      }
    }
  }
  return results;
}

/**
 * Deletes networks no VM uses, with one look at the VMs and, where one backend holds them all, one bulk call
 * (one nftables load). A network still in use ends the bulk part; the one-by-one path then refuses it and says why.
 */
async function deleteNetworks(
  host: BatchHost,
  group: Of<'network.delete'>[],
  ctx: OpContext,
): Promise<ItemResult[]> {
  const used = new Set<string>();
  for (const vm of await host.hypervisor.list())
    for (const n of (await host.hypervisor.config(vm.name))?.nics ?? []) used.add(n.network);
  let free = group.findIndex((a) => used.has(a.name));
  if (free < 0) free = group.length;
  const holders = new Map<NetworkDriver, Set<string>>();
  for (const d of Object.values(host.networks))
    holders.set(d, new Set((await d.listNetworks()).map((n) => n.name)));
  const names = group.slice(0, free).map((a) => a.name);
  const held = [...holders].filter(([, have]) => names.some((n) => have.has(n)));
  const [driver, have] = held[0] ?? [];
  if (held.length !== 1 || !driver?.deleteNetworks || !names.every((n) => have!.has(n)) || names.length < 2)
    return oneByOne(host, group, ctx);
  const results: ItemResult[] = await driver.deleteNetworks(names, ctx);
  const allDone = results.length === names.length && !results.some((r) => !r.ok);
  return allDone && free < group.length
    ? [...results, ...(await oneByOne(host, group.slice(free), ctx))]
    : results;
}

/** Each backend's ports in one bulk call (one by one where a backend has none). */
export async function ensurePortsTogether(
  host: Pick<BatchHost, 'networks' | 'port'>,
  nics: readonly NicConfig[],
  ctx: OpContext,
): Promise<void> {
  for (const [backend, list] of byBackend(nics)) {
    const driver = host.networks[backend];
    if (!driver)
      throw new InvalidStateError(`this host has no ${backend} network backend for NIC ${list[0]!.tap}`);
    for (const n of list) assertPortGroupsSupported('this host', driver, n);
    const ports = list.map((n) => host.port(n));
    if (driver.ensurePorts) await driver.ensurePorts(ports, ctx);
    else for (const p of ports) await driver.ensurePort(p, ctx);
  }
}

/** Removes the ports of `nics`, each backend's together. */
async function deletePortsTogether(
  host: BatchHost,
  nics: readonly NicConfig[],
  ctx: OpContext,
): Promise<void> {
  for (const [backend, list] of byBackend(nics)) {
    const driver = host.networks[backend];
    if (!driver) continue;
    if (driver.deletePorts)
      await driver.deletePorts(
        list.map((n) => n.tap),
        ctx,
      );
    else for (const n of list) await driver.deletePort(n.tap, ctx);
  }
}

function byBackend(nics: readonly NicConfig[]): Map<NetworkBackend, NicConfig[]> {
  const m = new Map<NetworkBackend, NicConfig[]>();
  for (const n of nics) {
    const b = n.backend ?? 'linux';
    m.set(b, [...(m.get(b) ?? []), n]);
  }
  return m;
}
