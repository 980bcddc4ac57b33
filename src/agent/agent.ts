import { join } from 'node:path';
import type { HypervisorDriver, SecretValues } from '../drivers/hypervisor/types.js';
import type { LbDriver } from '../drivers/lb/driver.js';
import type { ItemResult, NetworkDriver, OpContext, UplinkManager } from '../drivers/network/types.js';
import type { Runner } from '../exec/runner.js';
import type { LeaseStatus } from '../shared/cluster.js';
import type { DeviceInventory } from '../shared/devices.js';
import { InvalidStateError, NotFoundError, UnsupportedError } from '../shared/errors.js';
import { log } from '../shared/log.js';
import type { HostReport, NetworkBackend, NicConfig, VmConfig } from '../shared/model.js';
import { SerialQueue } from '../shared/queue.js';
import { ensurePortsTogether, runBatch } from './batch.js';
import type { ClusterMembership } from './cluster/types.js';
import { VmFencing } from './cluster/vm-fencing.js';
import { ConfirmManager, type Undo } from './confirm.js';
import { computeHostReport } from './host-report.js';
import { executeLb } from './lb.js';
import { nicBackend, portOf } from './port-config.js';
import { Prober } from './probes.js';
import { assertPortGroupsSupported, deleteSecurityGroup, ensureSecurityGroup } from './security-groups.js';
import { isStorageAction, type StorageDeps, StorageOps, storageHostReport } from './storage.js';
import { configureTuning, type HostTuner, requireTuner } from './tuning.js';
import { hotplugVm, keepLegacyTaps } from './vm-reconfigure.js';
import type { AgentAction, ConfirmState, Fence } from './wire.js';
import type { ProbeBatchRequest, ProbeRequest, ProbeResult } from './wire-probe.js';

/** The host's uplink: observe and configure it, and snapshot/restore it around a commit-confirmed change. */
export interface UplinkControl extends UplinkManager {
  /** Everything `restore` needs to put the uplink back as it is now (JSON-serialisable). */
  snapshot(device: string): Promise<unknown>;
  /** Puts the uplink back as `snapshot` describes it. */
  restore(snapshot: unknown, ctx?: OpContext): Promise<void>;
}

/** Dependencies of an agent: its host's name and drivers. */
export interface AgentDeps {
  host: string;
  runner: Runner;
  /** Network backends this host can drive (ovs only where Open vSwitch is installed). */
  networks: Partial<Record<NetworkBackend, NetworkDriver>>;
  hypervisor: HypervisorDriver;
  /** The host's uplink NIC (`vmlink agent --uplink`), reported as `HostReport.uplink`. */
  uplinkDevice?: string;
  uplink?: UplinkControl;
  /** Agent state directory: the backends' network directories (`network-linux/`, `network-ovs/`), pending confirmations. */
  stateDir: string;
  /** Reads the host's PCI and USB devices (drivers/devices); absent: the agent reports none. */
  devices?: () => Promise<DeviceInventory>;
  /** Storage: the host's role and pool backends (default: a compute host without pools). */
  storage?: Partial<Pick<StorageDeps, 'role' | 'pools' | 'poolRoots' | 'importRoots'>>;
  /**
   * The host's membership in a cluster (`vmlink agent --etcd`): its lease, and the owner check every vm.create,
   * vm.start and vm.hotplug must pass. Absent: no cluster, VMs start on the controller's word.
   */
  cluster?: ClusterMembership;
  /** The host's TCP tuning (`hosts[].tuning`); absent: the agent reports none and refuses tuning actions. */
  tuning?: HostTuner;
  /** Load balancers (HAProxy + Keepalived); absent: the agent reports none and refuses LB actions. */
  lb?: LbDriver;
}

/** One host's agent: applies actions through its drivers and reports observed state. */
export class Agent {
  private readonly confirms: ConfirmManager;
  private readonly queue = new SerialQueue();
  private readonly prober: Prober;
  private inventory: Promise<DeviceInventory | undefined> | undefined;
  private readonly storage: StorageOps;
  private readonly fencing: VmFencing;

  constructor(private readonly deps: AgentDeps) {
    this.prober = new Prober({ runner: deps.runner, hypervisor: deps.hypervisor });
    this.storage = StorageOps.of(deps.host, deps.hypervisor, deps.stateDir, deps.storage);
    this.fencing = new VmFencing(deps.host, deps.hypervisor, deps.cluster);
    this.confirms = new ConfirmManager({
      dir: join(deps.stateDir, 'confirms'),
      revert: (undo) => this.serial(() => this.undo(undo)),
    });
  }

  /** Re-adopts VMs left by an earlier agent process and re-arms pending confirmations; call once at start. */
  async start(): Promise<void> {
    // A storage host runs no VMs: nothing to adopt, no KVM to probe.
    if (this.role === 'storage') return this.confirms.resume();
    for (const d of Object.values(this.deps.networks)) await d.upgradeState?.();
    await this.deps.hypervisor.adopt();
    await this.guardRunningPorts();
    this.confirms.resume();
    await this.devices(true);
  }

  /**
   * The host's devices: read again when `fresh` (at start, `GET /v1/devices`), else the last reading (reports).
   * A failed reading is logged and leaves the report without devices; it never stops the agent.
   */
  devices(fresh = false): Promise<DeviceInventory | undefined> {
    const read = this.deps.devices;
    if (!read) return Promise.resolve(undefined);
    if (fresh || !this.inventory)
      this.inventory = read().catch((e) => {
        log.warn({ err: (e as Error).message }, 'could not read the host devices');
        return undefined;
      });
    return this.inventory;
  }

  /**
   * Ensures the ports of VMs that already run, so that an upgraded agent puts today's guest filters (port guards)
   * on them now rather than at each VM's next start. Ports are idempotent; a failure is logged, never fatal.
   */
  private async guardRunningPorts(): Promise<void> {
    try {
      const running = (await this.deps.hypervisor.list()).filter((vm) => vm.state === 'running');
      const nics = running.flatMap((vm) => vm.config?.nics ?? []);
      if (nics.length > 0)
        await ensurePortsTogether({ networks: this.deps.networks, port: portOf }, nics, {});
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'could not re-ensure the ports of running VMs at start');
    }
  }

  /** Stops the confirmation timers (pending ones are re-armed by the next start). */
  stop(): void {
    this.confirms.close();
  }

  /** The host this agent runs on. */
  get host(): string {
    return this.deps.host;
  }

  /** What this host is for (`vmlink agent --role`). */
  get role(): StorageDeps['role'] {
    return this.deps.storage?.role ?? 'compute';
  }

  /** Network backends this agent drives. */
  get backends(): NetworkBackend[] {
    return Object.keys(this.deps.networks).sort() as NetworkBackend[];
  }

  /** Observed state and capabilities of this host. */
  report(): Promise<HostReport> {
    if (this.role === 'storage') return storageHostReport(this.deps.host, this.storage);
    return computeHostReport(this.deps, this.backends, () => this.devices(), this.storage);
  }

  /** Whole-VM snapshots of VM `name`. */
  vmSnapshots(name: string) {
    return this.storage.vmSnapshots(name);
  }

  /** Applies one action; idempotent where the action allows, `InvalidStateError` where state forbids it. */
  execute(action: AgentAction, ctx: OpContext = {}): Promise<void> {
    return this.serial(async () => {
      await this.admit(action);
      return this.doExecute(action, ctx);
    });
  }

  /**
   * Applies a batch of actions in order, consecutive ones of a kind together (see batch.ts); one result per
   * action attempted, stopping after the first failure. Commit-confirmed actions are refused by the wire schema.
   */
  executeBatch(actions: readonly AgentAction[], ctx: OpContext = {}): Promise<ItemResult[]> {
    return this.serial(async () => {
      for (const a of actions) await this.admit(a);
      return runBatch(
        {
          networks: this.deps.networks,
          hypervisor: this.deps.hypervisor,
          one: (a, c) => this.doExecute(a, c),
          keepTaps: keepLegacyTaps,
          port: portOf,
        },
        actions,
        ctx,
      );
    });
  }

  /**
   * What no schema can check, before an action runs (batched ones too): the host's role allows it, and a VM's
   * `file` disks are volumes of pools this host holds.
   */
  private async admit(action: AgentAction): Promise<void> {
    this.storage.assertRoleAllows(action);
    const cluster = this.deps.cluster;
    if (cluster) {
      // Before a VM starts or its disks open: this host holds its lease and etcd's owner record names it with the
      // action's token (docs/ha.md, "Ownership and fencing tokens").
      if (action.kind === 'vm.create' || action.kind === 'vm.hotplug')
        await cluster.assertOwner(action.vm.name, action.fence);
      else if (action.kind === 'vm.start') await cluster.assertOwner(action.name, action.fence);
    }
    if (action.kind === 'vm.create' || action.kind === 'vm.hotplug')
      await this.storage.assertDiskSources(action.vm);
  }

  /** After a VM started or took new disks: stopped again and refused if the lease was lost meanwhile. */
  private assertStillHeld(name: string): Promise<void> {
    return this.fencing.assertStillHeld(name);
  }

  /** The cluster watchdog's action: stops every running VM of this host at once (see VmFencing.fenceVms). */
  fenceVms(reason: string): Promise<string[]> {
    return this.fencing.fenceVms(reason);
  }

  /** At start in a cluster: stops the running VMs whose owner record names another host; resolves their names. */
  stopVmsOwnedElsewhere(): Promise<string[]> {
    return this.role === 'storage' ? Promise.resolve([]) : this.fencing.stopVmsOwnedElsewhere();
  }

  /** This host's cluster lease (`off` without a cluster); with `verifyMs`, after a renewal bounded by it. */
  leaseStatus(verifyMs?: number): Promise<LeaseStatus> {
    return this.fencing.leaseStatus(verifyMs);
  }

  /** Keeps a commit-confirmed change (404 unknown, 409 already rolled back). */
  confirm(id: string): ConfirmState {
    return this.confirms.confirm(id);
  }

  /** State of a commit-confirmed change. */
  confirmState(id: string): ConfirmState {
    return this.confirms.get(id);
  }

  private async doExecute(action: AgentAction, ctx: OpContext): Promise<void> {
    const { hypervisor } = this.deps;
    if (isStorageAction(action)) return this.storage.execute(action, ctx);
    switch (action.kind) {
      case 'network.ensure': {
        const driver = this.driver(action.network.backend, `network ${action.network.name}`);
        if (!action.confirm) return driver.ensureNetwork(action.network, action.configHash, ctx);
        this.confirms.assertNonePending();
        const undo = await this.networkUndo(action.network.name);
        await driver.ensureNetwork(action.network, action.configHash, ctx);
        this.confirms.arm(
          action.confirm.id,
          action.confirm.timeoutMs,
          `network ${action.network.name}`,
          undo,
        );
        return;
      }
      case 'network.delete': {
        const users = await this.vmsWhose((n) => n.network === action.name);
        if (users.length)
          throw new InvalidStateError(
            `network ${action.name} is still used by VM(s) ${users.join(', ')}`,
            `network/${action.name}`,
          );
        if (action.confirm) this.confirms.assertNonePending();
        const undo = action.confirm ? await this.networkUndo(action.name) : undefined;
        await this.deleteNetwork(action.name, ctx);
        if (action.confirm && undo)
          this.confirms.arm(action.confirm.id, action.confirm.timeoutMs, `network ${action.name}`, undo);
        return;
      }
      case 'uplink.configure': {
        const uplink = this.deps.uplink;
        if (!uplink)
          throw new UnsupportedError(
            `host ${this.deps.host} cannot manage its uplink (no uplink manager in this agent); remove hosts[].network for it`,
            `host/${this.deps.host}`,
          );
        if (!action.confirm) return uplink.configureUplink(action.uplink, action.configHash, ctx);
        this.confirms.assertNonePending();
        const snapshot = await uplink.snapshot(action.uplink.device);
        await uplink.configureUplink(action.uplink, action.configHash, ctx);
        this.confirms.arm(action.confirm.id, action.confirm.timeoutMs, `uplink ${action.uplink.device}`, {
          kind: 'uplink',
          device: action.uplink.device,
          snapshot,
        });
        return;
      }
      case 'tuning.configure':
        return configureTuning(requireTuner(this.deps), this.confirms, action, ctx);
      case 'lb.ensure':
      case 'lb.delete':
        return executeLb(this.deps.host, this.deps.lb, action, ctx);
      case 'securityGroup.ensure':
        return ensureSecurityGroup(this.deps.host, this.deps.networks, action.group, action.configHash, ctx);
      case 'securityGroup.delete': {
        const users = await this.vmsWhose((n) => n.securityGroups?.includes(action.name) === true);
        return deleteSecurityGroup(this.deps.networks, action.name, users, ctx);
      }
      case 'vm.create': {
        // Creates, reconfigures in place (disks kept) or repairs the ports of a VM.
        const existing = (await hypervisor.list()).find((v) => v.name === action.vm.name);
        if (
          existing &&
          existing.configHash !== action.configHash &&
          existing.state !== 'stopped' &&
          existing.state !== 'crashed'
        ) {
          throw new InvalidStateError(
            `reconfiguring VM ${action.vm.name} requires stopped (it is ${existing.state})`,
            `vm/${action.vm.name}`,
          );
        }
        const before = existing ? await hypervisor.config(action.vm.name) : undefined;
        const vm = existing?.state === 'running' ? keepLegacyTaps(action.vm, before) : action.vm;
        for (const nic of vm.nics) await this.ensurePort(nic, ctx);
        await hypervisor.create(vm, action.configHash, ctx, action.secrets);
        // Ports of NICs the new configuration no longer has.
        const kept = new Set(vm.nics.map((n) => n.tap));
        for (const nic of before?.nics ?? [])
          if (!kept.has(nic.tap)) await this.deps.networks[nicBackend(nic)]?.deletePort(nic.tap, ctx);
        return;
      }
      case 'vm.hotplug':
        return hotplugVm(
          {
            hypervisor,
            networks: this.deps.networks,
            vm: (n) => this.vm(n),
            ensurePort: (nic, c) => this.ensurePort(nic, c),
            assertStillHeld: (n) => this.assertStillHeld(n),
          },
          action,
          ctx,
        );
      case 'vm.start': {
        const vm = await this.vm(action.name);
        if (vm.state === 'running') return;
        const cfg = await hypervisor.config(action.name);
        // Taps may have been lost (host reboot); recreate them before QEMU opens them.
        for (const nic of cfg?.nics ?? []) await this.ensurePort(nic, ctx);
        await hypervisor.start(action.name, ctx, action.secrets);
        return this.assertStillHeld(action.name);
      }
      case 'vm.stop': {
        const vm = await this.vm(action.name);
        if (vm.state === 'stopped') return;
        return hypervisor.stop(
          action.name,
          { force: action.force, ...(action.timeoutMs === undefined ? {} : { timeoutMs: action.timeoutMs }) },
          ctx,
        );
      }
      case 'vm.delete': {
        const cfg = await hypervisor.config(action.name);
        await hypervisor.delete(action.name, ctx);
        for (const nic of cfg?.nics ?? [])
          await this.deps.networks[nicBackend(nic)]?.deletePort(nic.tap, ctx);
        return;
      }
    }
  }

  /** Names of this host's VMs with a NIC that `nicMatches` (a network or group still in use). */
  private async vmsWhose(nicMatches: (nic: NicConfig) => boolean): Promise<string[]> {
    const users: string[] = [];
    for (const vm of await this.deps.hypervisor.list()) {
      const cfg = await this.deps.hypervisor.config(vm.name);
      if (cfg?.nics.some(nicMatches)) users.push(vm.name);
    }
    return users;
  }

  /** The driver of `backend`, or an error naming the remedy when this host lacks it. */
  private driver(backend: NetworkBackend | undefined, what: string): NetworkDriver {
    const b = backend ?? 'linux';
    const d = this.deps.networks[b];
    if (d) return d;
    const remedy =
      b === 'ovs'
        ? 'install and start Open vSwitch on it (apt-get install openvswitch-switch) and restart its agent, or use backend: linux'
        : 'use a backend it has';
    throw new UnsupportedError(
      `${what} needs the ${b} network backend, which host ${this.deps.host} lacks (it has: ${this.backends.join(', ') || 'none'}); ${remedy}`,
      `host/${this.deps.host}`,
    );
  }

  private ensurePort(nic: NicConfig, ctx: OpContext): Promise<void> {
    const driver = this.driver(nic.backend, `NIC ${nic.tap} of network ${nic.network}`);
    assertPortGroupsSupported(`host ${this.deps.host}`, driver, nic);
    return driver.ensurePort(portOf(nic), ctx);
  }

  /** The OpenFlow rules of a network, from the backend that holds it. */
  async flows(name: string): Promise<{ backend: NetworkBackend; flows: string }> {
    for (const [backend, d] of Object.entries(this.deps.networks) as Array<[NetworkBackend, NetworkDriver]>) {
      if (!(await d.listNetworks()).some((n) => n.name === name)) continue;
      if (!d.flows)
        throw new UnsupportedError(
          `network ${name} uses the ${backend} backend, which switches with a kernel bridge and has no OpenFlow rules`,
          `network/${name}`,
        );
      return { backend, flows: await d.flows(name) };
    }
    throw new NotFoundError('network', name);
  }

  /** Deletes a network in whichever backend holds it (every backend when none reports it, to clear leftovers). */
  private async deleteNetwork(name: string, ctx: OpContext): Promise<void> {
    const drivers = Object.values(this.deps.networks);
    const holders = [];
    for (const d of drivers) if ((await d.listNetworks()).some((n) => n.name === name)) holders.push(d);
    for (const d of holders.length ? holders : drivers) await d.deleteNetwork(name, ctx);
  }

  /** How to take a change of network `name` back: the config a backend last built it from, or its absence. */
  private async networkUndo(name: string): Promise<Undo> {
    for (const d of Object.values(this.deps.networks)) {
      const previous = await d.appliedConfig(name);
      if (previous) return { kind: 'network', name, previous };
    }
    return { kind: 'network', name };
  }

  private async undo(u: Undo): Promise<void> {
    if (u.kind === 'tuning') return requireTuner(this.deps).restore(u.previous);
    if (u.kind === 'uplink') {
      if (!this.deps.uplink) throw new UnsupportedError('no uplink manager to restore the uplink with');
      return this.deps.uplink.restore(u.snapshot);
    }
    if (!u.previous) return this.deleteNetwork(u.name, {});
    const prev = u.previous;
    // Moved to another backend in the meantime: remove it there first.
    for (const [b, d] of Object.entries(this.deps.networks))
      if (b !== (prev.config.backend ?? 'linux') && (await d.listNetworks()).some((n) => n.name === u.name))
        await d.deleteNetwork(u.name);
    return this.driver(prev.config.backend, `network ${u.name}`).ensureNetwork(prev.config, prev.configHash);
  }

  // Host changes run one at a time, commit-confirm rollbacks included.
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  /** Runs a reachability probe from the host or from one of its guests. */
  probe(req: ProbeRequest): Promise<ProbeResult> {
    return this.prober.probe(req);
  }

  /** Runs a batch of probes from one source at once (one command); results in request order. */
  probeBatch(req: ProbeBatchRequest): Promise<ProbeResult[]> {
    return this.prober.probeBatch(req);
  }

  /** The observed VM called `name`, or `NotFoundError`. */
  async vm(name: string) {
    const vm = (await this.deps.hypervisor.list()).find((v) => v.name === name);
    if (!vm) throw new NotFoundError('vm', name);
    return vm;
  }

  /**
   * A live migration's target (agent/migrate/): the incoming VM's disk sources checked, its ports ready and its
   * directory made, not started. No owner check here: its QEMU stays paused until `assertMayRun` passed.
   */
  prepareIncoming(
    vm: VmConfig,
    configHash: string,
    ctx: OpContext = {},
    secrets?: SecretValues,
  ): Promise<void> {
    return this.serial(async () => {
      await this.storage.assertDiskSources(vm);
      for (const nic of vm.nics) await this.ensurePort(nic, ctx);
      await this.deps.hypervisor.create(vm, configHash, ctx, secrets);
    });
  }

  /** In a cluster: VM `name` may run here under `fence` (the owner check of a start); elsewhere passes. */
  async assertMayRun(name: string, fence: Fence | undefined): Promise<void> {
    await this.deps.cluster?.assertOwner(name, fence);
  }

  /** A migrated VM's MACs forwarded to its taps on this host's bridges (MigrationServiceDeps.claimPorts). */
  async claimPorts(name: string): Promise<void> {
    const cfg = await this.deps.hypervisor.config(name);
    for (const nic of cfg?.nics ?? [])
      await this.deps.networks[nicBackend(nic)]?.claimMac?.(nic.tap, nic.mac);
  }

  /** Hypervisor driver, for guest-level requests (exec, interfaces, console). */
  get hypervisor(): HypervisorDriver {
    return this.deps.hypervisor;
  }
}
