// A hypervisor that keeps its VMs in memory (no QEMU, no files, no devices): the simulated fleet's hosts
// (src/fleet-sim/) run the real agent on it, so that 1,000 hosts fit in one process. It keeps the contract of
// HypervisorDriver as the conformance suite (../conformance.ts) states it, the QEMU driver's refusals included.
import {
  InvalidRequestError,
  InvalidStateError,
  NotFoundError,
  UnsupportedError,
} from '../../../shared/errors.js';
import type { HostCapabilities, ObservedVm, VmConfig, VmPowerState } from '../../../shared/model.js';
import type { OpContext } from '../../../shared/op.js';
import { NAME_PATTERN } from '../../../spec/schema.js';
import type { GuestExecResult, GuestInterface, HypervisorDriver, VmStats } from '../types.js';

/** Options of `FakeHypervisorDriver`. */
export interface FakeHypervisorOptions {
  /** Whether a host tap exists (the fake network driver's `hasPort`): create refuses a NIC without its tap. */
  tapExists?: (tap: string) => boolean;
}

interface FakeVm {
  config: VmConfig;
  configHash: string;
  state: VmPowerState;
  /** Seconds of simulated CPU, advanced while it runs (metrics). */
  startedAt?: number;
  cpuSeconds: number;
}

/** `HypervisorDriver` over an in-memory table. */
export class FakeHypervisorDriver implements HypervisorDriver {
  private readonly vms = new Map<string, FakeVm>();

  constructor(private readonly opts: FakeHypervisorOptions = {}) {}

  async accelerator(): Promise<Pick<HostCapabilities, 'accelerator' | 'acceleratorReason'>> {
    return { accelerator: 'kvm', acceleratorReason: 'simulated host (fake hypervisor): no VM runs' };
  }

  async adopt(): Promise<void> {}

  async create(cfg: VmConfig, configHash: string, ctx?: OpContext): Promise<void> {
    if (!NAME_PATTERN.test(cfg.name))
      throw new InvalidRequestError(`VM name ${JSON.stringify(cfg.name)} is invalid`, cfg.name);
    const old = this.vms.get(cfg.name);
    if (old?.configHash === configHash) return;
    if (old && old.state !== 'stopped' && old.state !== 'crashed')
      throw new InvalidStateError(`reconfiguring VM ${cfg.name} requires it stopped`, `vm/${cfg.name}`);
    const missing = cfg.nics.find((n) => this.opts.tapExists && !this.opts.tapExists(n.tap));
    if (missing)
      throw new InvalidStateError(
        `VM ${cfg.name}: tap ${missing.tap} of network ${missing.network} does not exist (ensure its port first)`,
        `vm/${cfg.name}`,
      );
    ctx?.progress?.(`creating VM ${cfg.name} (simulated)`);
    this.vms.set(cfg.name, {
      config: structuredClone(cfg),
      configHash,
      state: 'stopped',
      cpuSeconds: old?.cpuSeconds ?? 0,
    });
  }

  async start(name: string): Promise<void> {
    const vm = this.must(name);
    if (vm.state === 'running' || vm.state === 'paused')
      throw new InvalidStateError(`start requires stopped: VM ${name} is running`, `vm/${name}`);
    vm.state = 'running';
    vm.startedAt = Date.now();
  }

  async stop(name: string): Promise<void> {
    this.halt(this.must(name));
  }

  async kill(name: string): Promise<boolean> {
    const vm = this.vms.get(name);
    if (!vm || vm.state === 'stopped' || vm.state === 'crashed') return false;
    this.halt(vm);
    return true;
  }

  async delete(name: string): Promise<void> {
    const vm = this.vms.get(name);
    if (vm) this.halt(vm);
    this.vms.delete(name);
  }

  async hotplug(cfg: VmConfig, configHash: string): Promise<void> {
    const vm = this.must(cfg.name);
    if (vm.configHash === configHash) return;
    if (vm.state !== 'running')
      throw new InvalidStateError(
        `hot-plug requires running: VM ${cfg.name} is not running`,
        `vm/${cfg.name}`,
      );
    const missing = cfg.nics.find((n) => this.opts.tapExists && !this.opts.tapExists(n.tap));
    if (missing)
      throw new InvalidStateError(
        `VM ${cfg.name}: tap ${missing.tap} of network ${missing.network} does not exist`,
        `vm/${cfg.name}`,
      );
    vm.config = structuredClone(cfg);
    vm.configHash = configHash;
  }

  async canHotplug(name: string): Promise<boolean> {
    return this.vms.get(name)?.state === 'running';
  }

  async list(): Promise<ObservedVm[]> {
    return [...this.vms.entries()].map(([name, vm]) => ({
      name,
      state: vm.state,
      // No pid: no process exists, and the agent's metrics count none.
      configHash: vm.configHash,
      problems: [],
      // A copy: the agent adds ports and problems to what it lists.
      config: structuredClone(vm.config),
    }));
  }

  async vmStats(): Promise<VmStats[]> {
    const now = Date.now();
    return [...this.vms.entries()].map(([name, vm]) => ({
      name,
      running: vm.state === 'running',
      cpuSecondsTotal: vm.cpuSeconds + (vm.startedAt ? (now - vm.startedAt) / 1000 / 100 : 0),
      memoryRssBytes: vm.state === 'running' ? vm.config.memoryMiB * 1048576 : 0,
      memoryConfiguredBytes: vm.config.memoryMiB * 1048576,
      disks: [],
      nics: vm.config.nics.map((n, i) => ({ nic: `nic${i}`, tap: n.tap })),
    }));
  }

  async config(name: string): Promise<VmConfig | undefined> {
    const vm = this.vms.get(name);
    return vm ? structuredClone(vm.config) : undefined;
  }

  async guestExec(name: string): Promise<GuestExecResult> {
    this.must(name);
    throw new UnsupportedError(`VM ${name} is simulated: it has no guest to run commands in`, `vm/${name}`);
  }

  async guestInterfaces(name: string): Promise<GuestInterface[]> {
    this.must(name);
    // No guest agent answers: the controller shows the spec's static addresses only, as for a guest without one.
    return [];
  }

  consolePath(name: string): string {
    // No socket exists behind it: a console attach finds nothing to connect to and says so.
    return `/nonexistent/vmlink-fake/${name}/console.sock`;
  }

  async consoleTail(name: string, maxBytes: number): Promise<string> {
    this.must(name);
    return `simulated VM ${name}: no console output\n`.slice(-maxBytes);
  }

  /** Number of VMs held (the simulator's memory figures). */
  get size(): number {
    return this.vms.size;
  }

  private halt(vm: FakeVm): void {
    if (vm.startedAt) vm.cpuSeconds += (Date.now() - vm.startedAt) / 1000 / 100;
    vm.startedAt = undefined;
    vm.state = 'stopped';
  }

  private must(name: string): FakeVm {
    const vm = this.vms.get(name);
    if (!vm) throw new NotFoundError('vm', name);
    return vm;
  }
}
