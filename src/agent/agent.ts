import { cpus, totalmem } from 'node:os';
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import type { NetworkDriver, OpContext } from '../drivers/network/types.js';
import { HOST_BUSYBOX, httpArgv, parseHttp, parsePing, pingArgv } from '../exec/probe.js';
import type { Runner } from '../exec/runner.js';
import { InvalidStateError, NotFoundError } from '../shared/errors.js';
import type { HostReport } from '../shared/model.js';
import { VERSION } from '../shared/version.js';
import type { AgentAction, ProbeRequest, ProbeResult } from './wire.js';

/** Dependencies of an agent: its host's name and drivers. */
export interface AgentDeps {
  host: string;
  runner: Runner;
  network: NetworkDriver;
  hypervisor: HypervisorDriver;
}

/** One host's agent: applies actions through its drivers and reports observed state. */
export class Agent {
  constructor(private readonly deps: AgentDeps) {}

  /** Re-adopts VMs left by an earlier agent process; call once at start. */
  async start(): Promise<void> {
    await this.deps.hypervisor.adopt();
  }

  /** Observed state and capabilities of this host. */
  async report(): Promise<HostReport> {
    const { network, hypervisor } = this.deps;
    const [accel, net, networks, vms] = await Promise.all([
      hypervisor.accelerator(),
      network.capabilities(),
      network.listNetworks(),
      hypervisor.list(),
    ]);
    // A VM whose tap fell off its bridge is broken even if QEMU runs.
    for (const vm of vms) {
      const cfg = await hypervisor.config(vm.name);
      for (const nic of cfg?.nics ?? []) {
        if (!(await network.portAttached(nic.tap, nic.bridge)))
          vm.problems.push(`port ${nic.tap} is not attached to ${nic.bridge}`);
      }
    }
    return {
      host: this.deps.host,
      agentVersion: VERSION,
      capabilities: {
        ...accel,
        cpus: cpus().length,
        memoryMiB: Math.floor(totalmem() / 1048576),
        network: net,
        backends: ['linux'],
      },
      networks,
      vms,
    };
  }

  /** Applies one action; idempotent where the action allows, `InvalidStateError` where state forbids it. */
  async execute(action: AgentAction, ctx: OpContext = {}): Promise<void> {
    const { network, hypervisor } = this.deps;
    switch (action.kind) {
      case 'network.ensure':
        return network.ensureNetwork(action.network, action.configHash, ctx);
      case 'network.delete': {
        const users = [];
        for (const vm of await hypervisor.list()) {
          const cfg = await hypervisor.config(vm.name);
          if (cfg?.nics.some((n) => n.network === action.name)) users.push(vm.name);
        }
        if (users.length)
          throw new InvalidStateError(
            `network ${action.name} is still used by VM(s) ${users.join(', ')}`,
            `network/${action.name}`,
          );
        return network.deleteNetwork(action.name, ctx);
      }
      case 'vm.create': {
        const existing = (await hypervisor.list()).find((v) => v.name === action.vm.name);
        if (existing && existing.configHash !== action.configHash) {
          throw new InvalidStateError(
            `vm.create requires that VM ${action.vm.name} not exist with another configuration (delete it first)`,
            `vm/${action.vm.name}`,
          );
        }
        for (const nic of action.vm.nics)
          await network.ensurePort({ tap: nic.tap, bridge: nic.bridge, mtu: nic.mtu }, ctx);
        return hypervisor.create(action.vm, action.configHash, ctx);
      }
      case 'vm.start': {
        const vm = await this.vm(action.name);
        if (vm.state === 'running') return;
        const cfg = await hypervisor.config(action.name);
        // Taps may have been lost (host reboot); recreate them before QEMU opens them.
        for (const nic of cfg?.nics ?? [])
          await network.ensurePort({ tap: nic.tap, bridge: nic.bridge, mtu: nic.mtu }, ctx);
        return hypervisor.start(action.name, ctx);
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
        for (const nic of cfg?.nics ?? []) await network.deletePort(nic.tap, ctx);
        return;
      }
    }
  }

  /** Runs a reachability probe from the host or from one of its guests. */
  async probe(req: ProbeRequest): Promise<ProbeResult> {
    const started = Date.now();
    if (req.from.kind === 'host') {
      const argv =
        req.kind === 'ping'
          ? pingArgv(req.target, req.timeoutMs, false)
          : httpArgv(req.target, req.port ?? 80, req.timeoutMs, [HOST_BUSYBOX]);
      const r = await this.deps.runner.run(argv, { allowFailure: true, timeoutMs: req.timeoutMs + 3_000 });
      return req.kind === 'ping'
        ? parsePing(r.code, r.stdout, r.stderr)
        : parseHttp(r.code, r.stdout, r.stderr, Date.now() - started);
    }
    const vm = await this.vm(req.from.name);
    if (vm.state !== 'running')
      throw new InvalidStateError(
        `probe from ${vm.name} requires running (it is ${vm.state})`,
        `vm/${vm.name}`,
      );
    const argv =
      req.kind === 'ping'
        ? pingArgv(req.target, req.timeoutMs, true)
        : httpArgv(req.target, req.port ?? 80, req.timeoutMs, []);
    const r = await this.deps.hypervisor.guestExec(vm.name, argv, { timeoutMs: req.timeoutMs + 5_000 });
    return req.kind === 'ping'
      ? parsePing(r.exitCode, r.stdout, r.stderr)
      : parseHttp(r.exitCode, r.stdout, r.stderr, Date.now() - started);
  }

  /** The observed VM called `name`, or `NotFoundError`. */
  async vm(name: string) {
    const vm = (await this.deps.hypervisor.list()).find((v) => v.name === name);
    if (!vm) throw new NotFoundError('vm', name);
    return vm;
  }

  /** Hypervisor driver, for guest-level requests (exec, interfaces, console). */
  get hypervisor(): HypervisorDriver {
    return this.deps.hypervisor;
  }
}
