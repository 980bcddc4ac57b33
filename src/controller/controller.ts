import type { AgentAction } from '../agent/wire.js';
import type { GuestExecResult } from '../drivers/hypervisor/types.js';
import type { Runner } from '../exec/runner.js';
import { Lab } from '../lab/lab.js';
import { planChanges } from '../plan/diff.js';
import { formatPlan, formatStep, summarizePlan } from '../plan/format.js';
import { type DesiredState, resolveSpec } from '../plan/resolve.js';
import type { Plan, Step } from '../plan/steps.js';
import {
  ConflictError,
  InvalidRequestError,
  InvalidSpecError,
  NotFoundError,
  VmlinkError,
} from '../shared/errors.js';
import type { HostReport, ObservedVm } from '../shared/model.js';
import { checkCapacity, loadSpec } from '../spec/load.js';
import type { Spec } from '../spec/schema.js';
import { AgentClient, agentAddress, gatherReports } from './agents.js';
import type { Store } from './store/types.js';
import type { TaskContext } from './tasks.js';
import { type VerifyResult, verifySpec } from './verify.js';

/** The spec last applied, as the store keeps it. */
export interface StoredSpec {
  text: string;
  source: string;
  appliedAt: string;
}

/** A computed plan with its rendering. */
export interface PlanResult {
  plan: Plan;
  text: string;
  summary: ReturnType<typeof summarizePlan>;
}

/** One host as `status` shows it. */
export interface HostStatus {
  name: string;
  address: string;
  reachable: boolean;
  error?: string;
  report?: HostReport;
}

/** One VM as `vm list` shows it: desired (spec) and observed (agent) side by side. */
export interface VmView {
  name: string;
  host: string;
  desired: 'running' | 'stopped' | 'absent';
  state: ObservedVm['state'] | 'absent' | 'unknown';
  cpus?: number;
  memoryMiB?: number;
  networks: string[];
  problems: string[];
}

const SPEC_KEY = 'spec/current';

/** Plans, applies and verifies specs against the hosts' agents. Holds no host state itself: agents report it. */
export class Controller {
  constructor(
    private readonly store: Store,
    private readonly runner: Runner,
  ) {}

  /** The spec last applied, parsed; undefined before the first apply. */
  async currentSpec(): Promise<(StoredSpec & { spec: Spec }) | undefined> {
    const s = await this.store.get<StoredSpec>(SPEC_KEY);
    return s ? { ...s, spec: loadSpec(s.text, s.source) } : undefined;
  }

  /** Validates `text` and diffs it against what the hosts report. */
  async plan(text: string, source: string): Promise<PlanResult> {
    const spec = loadSpec(text, source);
    return this.planFor(spec, resolveSpec(spec));
  }

  /** Plans and applies `text`, step by step in plan order; the next apply converges from any failure. */
  async apply(text: string, source: string, ctx: TaskContext): Promise<PlanResult & { applied: number }> {
    const spec = loadSpec(text, source);
    const result = await this.planFor(spec, resolveSpec(spec));
    ctx.progress(result.text);
    await this.store.put(SPEC_KEY, {
      text,
      source,
      appliedAt: new Date().toISOString(),
    } satisfies StoredSpec);
    const applied = await this.execute(spec, result.plan, ctx);
    await this.store.appendEvent('apply', `${source}: ${applied} change(s) applied`);
    return { ...result, applied };
  }

  /** Removes every VM and network of `text` (or of the last applied spec) from its hosts. */
  async destroy(
    text: string | undefined,
    source: string,
    ctx: TaskContext,
  ): Promise<PlanResult & { applied: number }> {
    const spec = text === undefined ? (await this.currentSpec())?.spec : loadSpec(text, source);
    if (!spec)
      throw new InvalidRequestError('nothing to destroy: no spec was given and none has been applied');
    const empty: DesiredState = Object.fromEntries(
      spec.hosts.map((h) => [h.name, { networks: [], vms: [] }]),
    );
    const result = await this.planFor(spec, empty, false);
    ctx.progress(result.text);
    const applied = await this.execute(spec, result.plan, ctx);
    const cur = await this.currentSpec().catch(() => undefined);
    if (!cur || sameHosts(cur.spec, spec)) await this.store.delete(SPEC_KEY);
    await this.store.appendEvent('destroy', `${source}: ${applied} change(s) applied`);
    return { ...result, applied };
  }

  /** Hosts of the applied spec, with their agents' reports. */
  async status(): Promise<{ spec?: { source: string; appliedAt: string }; hosts: HostStatus[] }> {
    const cur = await this.currentSpec();
    if (!cur) return { hosts: [] };
    const hosts = await Promise.all(
      cur.spec.hosts.map(async (h): Promise<HostStatus> => {
        const address = agentAddress(cur.spec, h.name);
        try {
          return {
            name: h.name,
            address,
            reachable: true,
            report: await new AgentClient(h.name, address).report(),
          };
        } catch (e) {
          return { name: h.name, address, reachable: false, error: (e as Error).message };
        }
      }),
    );
    return { spec: { source: cur.source, appliedAt: cur.appliedAt }, hosts };
  }

  /** Every VM of the applied spec and every VM the hosts report. */
  async vms(): Promise<VmView[]> {
    const cur = await this.currentSpec();
    if (!cur) return [];
    const { hosts } = await this.status();
    const out: VmView[] = [];
    for (const vm of cur.spec.vms) {
      const h = hosts.find((x) => x.name === vm.host);
      const obs = h?.report?.vms.find((v) => v.name === vm.name);
      out.push({
        name: vm.name,
        host: vm.host,
        desired: vm.state,
        state: !h?.reachable ? 'unknown' : (obs?.state ?? 'absent'),
        cpus: vm.cpus,
        memoryMiB: vm.memoryMiB,
        networks: vm.nics.map((n) => n.network),
        problems: obs?.problems ?? [],
      });
    }
    for (const h of hosts) {
      for (const v of h.report?.vms ?? []) {
        if (!out.some((o) => o.name === v.name))
          out.push({
            name: v.name,
            host: h.name,
            desired: 'absent',
            state: v.state,
            networks: [],
            problems: v.problems,
          });
      }
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Starts or stops one VM of the applied spec now (the spec's desired state is unchanged). */
  async vmPower(name: string, action: 'start' | 'stop', force = false): Promise<void> {
    const { agent } = await this.vmAgent(name);
    const act: AgentAction =
      action === 'start' ? { kind: 'vm.start', name } : { kind: 'vm.stop', name, force };
    await agent.act(act);
    await this.store.appendEvent(`vm.${action}`, `${name}${force ? ' (forced)' : ''}`);
  }

  /** Runs argv in a VM's guest. */
  async vmExec(name: string, argv: string[], timeoutMs: number, input?: string): Promise<GuestExecResult> {
    const { agent } = await this.vmAgent(name);
    return agent.exec(name, argv, timeoutMs, input);
  }

  /** The tail of a VM's serial console log. */
  async vmConsole(name: string, tail: number): Promise<{ log: string }> {
    const { agent } = await this.vmAgent(name);
    return agent.console(name, tail);
  }

  /** Measures the connectivity matrix of the applied spec. */
  async verify(ctx: TaskContext): Promise<VerifyResult> {
    const cur = await this.currentSpec();
    if (!cur) throw new InvalidRequestError('nothing to verify: apply a spec first');
    const r = await verifySpec(cur.spec, this.runner, ctx);
    await this.store.appendEvent('verify', `${r.cells.length} cells, ${r.mismatches} mismatch(es)`);
    return r;
  }

  /** Builds the spec's lab (namespaces, LAN, router, agents); idempotent. */
  async labUp(text: string, source: string, ctx: TaskContext): Promise<{ namespaces: string[] }> {
    const spec = loadSpec(text, source);
    if (!spec.lab)
      throw new InvalidSpecError(
        [{ path: 'lab', message: 'is required for `lab up`: the spec describes no lab' }],
        source,
      );
    const lab = new Lab(this.runner, spec.lab);
    await lab.up(ctx);
    await this.store.appendEvent('lab.up', `${spec.lab.name} from ${source}`);
    return { namespaces: await lab.existingNamespaces() };
  }

  /** Removes the spec's lab and everything in it (VMs, dnsmasq, agents, namespaces, state files). */
  async labDown(text: string, source: string, ctx: TaskContext): Promise<{ removed: string[] }> {
    const spec = loadSpec(text, source);
    if (!spec.lab)
      throw new InvalidSpecError(
        [{ path: 'lab', message: 'is required for `lab down`: the spec describes no lab' }],
        source,
      );
    const lab = new Lab(this.runner, spec.lab);
    const removed = await lab.existingNamespaces();
    await lab.down(ctx);
    const cur = await this.currentSpec().catch(() => undefined);
    if (cur?.spec.lab?.name === spec.lab.name) await this.store.delete(SPEC_KEY);
    await this.store.appendEvent('lab.down', spec.lab.name);
    return { removed };
  }

  /** The newest events. */
  events(limit: number) {
    return this.store.events(limit);
  }

  private async planFor(spec: Spec, desired: DesiredState, checkCaps = true): Promise<PlanResult> {
    const reports = await gatherReports(spec);
    if (checkCaps) {
      const issues = checkCapacity(
        spec,
        Object.fromEntries(
          reports.map((r) => [r.host, { cpus: r.capabilities.cpus, memoryMiB: r.capabilities.memoryMiB }]),
        ),
      );
      if (issues.length) throw new InvalidSpecError(issues);
    }
    const plan = planChanges(desired, reports);
    return { plan, text: formatPlan(plan), summary: summarizePlan(plan) };
  }

  private async execute(spec: Spec, plan: Plan, ctx: TaskContext): Promise<number> {
    let done = 0;
    for (const step of plan.steps) {
      if (ctx.signal.aborted)
        throw new VmlinkError(
          'invalid-state',
          `cancelled after ${done} of ${plan.steps.length} steps; apply again to converge`,
        );
      ctx.progress(`[${done + 1}/${plan.steps.length}] ${formatStep(step)}`);
      const agent = new AgentClient(step.host, agentAddress(spec, step.host));
      try {
        await agent.act(toAction(step));
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        await this.store.appendEvent('apply.failed', `${formatStep(step)}: ${msg}`);
        throw new VmlinkError(
          e instanceof VmlinkError ? e.kind : 'internal',
          `step ${done + 1}/${plan.steps.length} failed (${formatStep(step)} on ${step.host}): ${msg}\nNothing after it was applied; fix the cause and apply again to converge.`,
          { cause: e },
        );
      }
      done++;
    }
    return done;
  }

  private async vmAgent(name: string): Promise<{ agent: AgentClient; spec: Spec }> {
    const cur = await this.currentSpec();
    const vm = cur?.spec.vms.find((v) => v.name === name);
    if (!cur || !vm) throw new NotFoundError('vm', name);
    return { agent: new AgentClient(vm.host, agentAddress(cur.spec, vm.host)), spec: cur.spec };
  }
}

/** The agent action that carries out a plan step. */
export function toAction(step: Step): AgentAction {
  switch (step.kind) {
    case 'network.create':
    case 'network.update':
      return { kind: 'network.ensure', network: step.network, configHash: step.configHash };
    case 'network.delete':
      return { kind: 'network.delete', name: step.name };
    case 'vm.create':
      return { kind: 'vm.create', vm: step.vm, configHash: step.configHash };
    case 'vm.start':
      return { kind: 'vm.start', name: step.name };
    case 'vm.delete':
      return { kind: 'vm.delete', name: step.name };
    case 'vm.stop':
      return { kind: 'vm.stop', name: step.name, force: step.force };
  }
}

function sameHosts(a: Spec, b: Spec): boolean {
  return a.hosts.map((h) => h.name).join() === b.hosts.map((h) => h.name).join();
}

/** Rejects a mutating request while another one runs. */
export function assertIdle(running: { kind: string; id: string } | undefined): void {
  if (running)
    throw new ConflictError(
      `another ${running.kind} is running (task ${running.id}); wait for it or cancel it`,
    );
}
