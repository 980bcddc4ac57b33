import { randomUUID } from 'node:crypto';
import type { AgentAction, ConfirmState, GuestExecResult } from '../agent/wire.js';
import type { Runner } from '../exec/runner.js';
import { Lab } from '../lab/lab.js';
import { planChanges, stepPhase } from '../plan/diff.js';
import { formatPlan, formatStep, summarizePlan } from '../plan/format.js';
import { type DesiredState, resolveSpec, resolveUplinks } from '../plan/resolve.js';
import type { Plan, RiskyMark, Step } from '../plan/steps.js';
import {
  ConflictError,
  InvalidRequestError,
  InvalidSpecError,
  NotFoundError,
  UnavailableError,
  VmlinkError,
} from '../shared/errors.js';
import type { HostReport, ObservedVm, UplinkConfig } from '../shared/model.js';
import { admitSpec } from '../spec/admission.js';
import { loadSpec } from '../spec/load.js';
import type { NetworkSpec, Spec } from '../spec/schema.js';
import { networkHosts } from '../spec/topology.js';
import type { ThroughputResult } from '../verify/throughput.js';
import { type AgentClient, agentAddress, agentFor, gatherReports } from './agents.js';
import { type HostHealth, hostHealth } from './monitor.js';
import type { Store } from './store/types.js';
import type { TaskContext } from './tasks.js';
import { measureSpecThroughput, type ThroughputRequest, type VerifyResult, verifySpec } from './verify.js';

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
  /** Heartbeat state (`unknown` when the daemon has not polled it yet). */
  state: HostHealth['state'];
  /** When the agent last answered a heartbeat (ISO time). */
  lastSeen?: string;
  /** Heartbeats missed in a row. */
  missed?: number;
  error?: string;
  report?: HostReport;
}

/** A risky step cut its host's management path and the host reverted it by itself (commit-confirm). */
export class RolledBackError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('unavailable', message, subject === undefined ? {} : { subject });
  }
}

/** Default commit-confirm window of a risky step. */
export const DEFAULT_CONFIRM_MS = 60_000;
/** How long after the window the controller waits before asking the host what became of the change. */
const ROLLBACK_GRACE_MS = 10_000;
/** How long it then keeps asking. */
const ROLLBACK_POLL_MS = 60_000;

/** One network as `network show` shows it. */
export interface NetworkView {
  name: string;
  spec: NetworkSpec;
  /** `ports`: the host devices of the VM NICs on the network there (tap names, as the agent realised them). */
  hosts: Array<{
    host: string;
    observed?: HostReport['networks'][number];
    ports?: Array<{ vm: string; tap: string }>;
    flows?: string;
    error?: string;
  }>;
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
// The last spec whose apply completed: a failed apply must not make the next one forget hosts it was dropping.
const LAST_GOOD_KEY = 'spec/last-good';

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
    return this.planFor(spec, resolveSpec(spec), true, await this.previousSpec());
  }

  /** Plans and applies `text`, step by step in plan order; the next apply converges from any failure. */
  async apply(text: string, source: string, ctx: TaskContext): Promise<PlanResult & { applied: number }> {
    const spec = loadSpec(text, source);
    const previous = await this.previousSpec();
    const result = await this.planFor(spec, resolveSpec(spec), true, previous);
    ctx.progress(result.text);
    await this.store.put(SPEC_KEY, {
      text,
      source,
      appliedAt: new Date().toISOString(),
    } satisfies StoredSpec);
    const applied = await this.execute(spec, result.plan, ctx, previous);
    await this.store.put(LAST_GOOD_KEY, {
      text,
      source,
      appliedAt: new Date().toISOString(),
    } satisfies StoredSpec);
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
    if (!cur || sameHosts(cur.spec, spec)) {
      await this.store.delete(SPEC_KEY);
      await this.store.delete(LAST_GOOD_KEY);
    }
    await this.store.appendEvent('destroy', `${source}: ${applied} change(s) applied`);
    return { ...result, applied };
  }

  /** Hosts of the applied spec: heartbeat state, and the agents' reports of those that answer. */
  async status(): Promise<{ spec?: { source: string; appliedAt: string }; hosts: HostStatus[] }> {
    const cur = await this.currentSpec();
    if (!cur) return { hosts: [] };
    const health = await hostHealth(this.store);
    const hosts = await Promise.all(
      cur.spec.hosts.map(async (h): Promise<HostStatus> => {
        const address = agentAddress(cur.spec, h.name);
        const hh = health[h.name];
        const beat = {
          state: hh?.state ?? ('unknown' as const),
          ...(hh?.lastSeen ? { lastSeen: hh.lastSeen } : {}),
          ...(hh ? { missed: hh.missed } : {}),
        };
        if (hh?.state === 'unreachable')
          return {
            name: h.name,
            address,
            reachable: false,
            ...beat,
            error: `missed ${hh.missed} heartbeats (last seen ${hh.lastSeen ?? 'never'}): ${hh.error ?? ''}`,
          };
        try {
          return {
            name: h.name,
            address,
            reachable: true,
            ...beat,
            report: await agentFor(cur.spec, h.name).report(20_000),
          };
        } catch (e) {
          return { name: h.name, address, reachable: false, ...beat, error: (e as Error).message };
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
        networks: vm.nics.flatMap((n) => n.trunk ?? (n.network === undefined ? [] : [n.network])),
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

  /** A network of the applied spec: its spec, and per member host what the agent observes (and its flows). */
  async networkShow(name: string, withFlows: boolean): Promise<NetworkView> {
    const cur = await this.currentSpec();
    const net = cur?.spec.networks.find((n) => n.name === name);
    if (!cur || !net) throw new NotFoundError('network', name);
    const hosts = await Promise.all(
      networkHosts(cur.spec, net).map(async (host): Promise<NetworkView['hosts'][number]> => {
        const agent = agentFor(cur.spec, host);
        try {
          const report = await agent.report();
          const observed = report.networks.find((n) => n.name === name);
          const flows = withFlows ? (await agent.flows(name)).flows : undefined;
          const ports = report.vms.flatMap((v) =>
            (v.ports ?? []).filter((p) => p.network === name).map((p) => ({ vm: v.name, tap: p.tap })),
          );
          return {
            host,
            ...(observed ? { observed, ports } : {}),
            ...(flows === undefined ? {} : { flows }),
          };
        } catch (e) {
          return { host, error: (e as Error).message.split('\n')[0]! };
        }
      }),
    );
    return { name, spec: net, hosts };
  }

  /** Every network of the applied spec with its member hosts. */
  async networks(): Promise<Array<{ name: string; mode: string; backend: string; hosts: string[] }>> {
    const cur = await this.currentSpec();
    if (!cur) return [];
    return cur.spec.networks.map((n) => ({
      name: n.name,
      mode: n.mode,
      backend: n.backend,
      hosts: networkHosts(cur.spec, n),
    }));
  }

  /** Measures TCP throughput between two endpoints of the applied spec with iperf3. */
  async throughput(req: ThroughputRequest, ctx: TaskContext): Promise<ThroughputResult> {
    const cur = await this.currentSpec();
    if (!cur) throw new InvalidRequestError('nothing to measure: apply a spec first');
    const r = await measureSpecThroughput(cur.spec, this.runner, req, ctx);
    await this.store.appendEvent('verify.throughput', `${r.from} -> ${r.to}: ${r.mbps} Mbit/s`);
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
    const lab = new Lab(this.runner, spec.lab, {
      uplinks: Object.fromEntries(spec.hosts.map((h) => [h.name, h.uplink])),
    });
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
    if (cur?.spec.lab?.name === spec.lab.name) {
      await this.store.delete(SPEC_KEY);
      await this.store.delete(LAST_GOOD_KEY);
    }
    await this.store.appendEvent('lab.down', spec.lab.name);
    return { removed };
  }

  /** The newest events. */
  events(limit: number) {
    return this.store.events(limit);
  }

  /**
   * The spec applied before, for hosts that a new spec drops: the last one whose apply completed (so hosts a failed
   * apply was dropping are still dropped next time), else the last one attempted.
   */
  private async previousSpec(): Promise<Spec | undefined> {
    const good = await this.store.get<StoredSpec>(LAST_GOOD_KEY);
    if (good) {
      try {
        return loadSpec(good.text, good.source);
      } catch {
        // A spec that no longer validates (older vmlink): fall back to the current one.
      }
    }
    return (await this.currentSpec().catch(() => undefined))?.spec;
  }

  private async planFor(
    spec: Spec,
    desired: DesiredState,
    checkCaps = true,
    previous?: Spec,
  ): Promise<PlanResult> {
    const health = await hostHealth(this.store);
    const notes = Object.fromEntries(
      Object.entries(health)
        .filter(([, h]) => h.state === 'unreachable')
        .map(([name, h]) => [name, `unreachable since ${h.since}, last seen ${h.lastSeen ?? 'never'}`]),
    );
    const reports = await gatherReports(spec, notes);
    if (checkCaps) {
      // Admission: the valid spec against what its hosts report (capacity, backends, kernel features).
      const issues = admitSpec(spec, Object.fromEntries(reports.map((r) => [r.host, r.capabilities])));
      if (issues.length) throw new InvalidSpecError(issues);
    }
    // Hosts the previous spec had and this one drops: what runs there goes, if they answer.
    const kept = new Set(spec.hosts.map((h) => h.name));
    const dropped = (previous?.hosts ?? []).filter((h) => !kept.has(h.name));
    const lines: string[] = [];
    const removed = await Promise.all(
      dropped.map(async (h) => {
        try {
          return await agentFor(previous!, h.name).report(20_000);
        } catch (e) {
          lines.push(
            `! host ${h.name} left the spec but is unreachable (${(e as Error).message.split('\n')[0]}); its VMs and networks stay until it is back and you apply again.`,
          );
          return undefined;
        }
      }),
    );
    const observed = [...reports, ...removed.filter((r): r is HostReport => r !== undefined)];
    const uplinks: Record<string, UplinkConfig | undefined> = checkCaps ? resolveUplinks(spec) : {};
    const plan = planChanges(desired, observed, uplinks);
    const text = [formatPlan(plan), ...lines].join('\n');
    return { plan, text, summary: summarizePlan(plan) };
  }

  /**
   * Runs the plan: phase by phase (see `stepPhase`), each host's steps of a phase in order, different hosts at the
   * same time. After a failure no host starts another step; the error names the step that failed.
   */
  private async execute(spec: Spec, plan: Plan, ctx: TaskContext, previous?: Spec): Promise<number> {
    const total = plan.steps.length;
    const indexed = plan.steps.map((step, i) => ({ step, n: i + 1 }));
    let done = 0;
    let failure: unknown;
    for (let i = 0; i < indexed.length; ) {
      const phase = stepPhase(indexed[i]!.step);
      let j = i;
      while (j < indexed.length && stepPhase(indexed[j]!.step) === phase) j++;
      const byHost = new Map<string, typeof indexed>();
      for (const s of indexed.slice(i, j)) byHost.set(s.step.host, [...(byHost.get(s.step.host) ?? []), s]);
      await Promise.all(
        [...byHost.values()].map(async (steps) => {
          for (const { step, n } of steps) {
            if (failure !== undefined) return;
            if (ctx.signal.aborted) {
              failure ??= new VmlinkError(
                'invalid-state',
                `cancelled after ${done} of ${total} steps; apply again to converge`,
              );
              return;
            }
            try {
              await this.runStep(spec, step, n, total, ctx, previous);
              done++;
            } catch (e) {
              failure ??= e;
              return;
            }
          }
        }),
      );
      if (failure !== undefined) throw failure;
      i = j;
    }
    return done;
  }

  private async runStep(
    spec: Spec,
    step: Step,
    n: number,
    total: number,
    ctx: TaskContext,
    previous?: Spec,
  ): Promise<void> {
    ctx.progress(`[${n}/${total}] ${formatStep(step)}`);
    // A host the new spec dropped is reached where the old spec put it (removed-host steps).
    const agent = agentFor(
      spec.hosts.some((h) => h.name === step.host) ? spec : (previous ?? spec),
      step.host,
    );
    const mark = step as RiskyMark;
    try {
      if (mark.risky) await this.actConfirmed(agent, step, mark.confirmTimeoutMs ?? DEFAULT_CONFIRM_MS, ctx);
      else await agent.act(toAction(step));
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      await this.store.appendEvent('apply.failed', `${formatStep(step)}: ${msg}`);
      if (e instanceof RolledBackError)
        throw new RolledBackError(
          `step ${n}/${total} (${formatStep(step)}) ${msg} Nothing after it was applied.`,
          `host/${step.host}`,
        );
      throw new VmlinkError(
        e instanceof VmlinkError ? e.kind : 'internal',
        `step ${n}/${total} failed (${formatStep(step)} on ${step.host}): ${msg}\nNo step started after it; fix the cause and apply again to converge.`,
        { cause: e },
      );
    }
  }

  /**
   * Sends a risky step with commit-confirm and confirms it once the host answers on its management path again.
   * Throws `RolledBackError` when the host never answered in the window and reverted the change by itself.
   */
  private async actConfirmed(
    agent: AgentClient,
    step: Step,
    timeoutMs: number,
    ctx: TaskContext,
  ): Promise<void> {
    const id = randomUUID();
    const host = step.host;
    const started = Date.now();
    const deadline = started + timeoutMs;
    const secs = Math.round(timeoutMs / 1000);
    let sendError: unknown;
    try {
      // The answer itself may be lost when the change cuts the path: do not wait past half the window for it.
      await agent.act(
        { ...toAction(step), confirm: { id, timeoutMs } } as AgentAction,
        Math.max(3_000, timeoutMs / 2),
      );
    } catch (e) {
      sendError = e;
    }
    if (sendError !== undefined) {
      ctx.progress(`${host} did not answer: ${(sendError as Error).message.split('\n')[0]}`);
      // Did the change happen at all? An agent that answers without the id refused it before arming.
      const st = await attempt(agent.confirmState(id, 2_000));
      if (st instanceof VmlinkError && st.kind === 'not-found') throw sendError;
      if (!(st instanceof Error) && st.state !== 'pending') return this.rolledBack(host, st, secs);
    }
    // Confirm through the normal path; retry while the window lasts.
    let lastSaid = Number.NEGATIVE_INFINITY;
    while (Date.now() < deadline) {
      if (sendError !== undefined && Date.now() - lastSaid >= 5_000) {
        ctx.progress(
          `waiting for ${host} to answer on its management path (commit-confirm, ${Math.max(0, Math.round((deadline - Date.now()) / 1000))} s left)`,
        );
        lastSaid = Date.now();
      }
      const r = await attempt(agent.confirm(id, Math.min(2_000, Math.max(500, deadline - Date.now()))));
      if (!(r instanceof Error)) {
        if (sendError !== undefined) ctx.progress(`${host} answers again; change confirmed`);
        return;
      }
      if (r instanceof VmlinkError && (r.kind === 'conflict' || r.kind === 'invalid-state')) break;
      if (r instanceof VmlinkError && r.kind === 'not-found') throw sendError ?? r;
      sendError ??= r;
      await sleep(Math.min(1_000, Math.max(0, deadline - Date.now())));
    }
    // The window is over: the host reverts by itself. Give it time, then ask what it did.
    ctx.progress(
      `${host} did not confirm within ${secs} s; waiting for it to roll the change back by itself`,
    );
    const askFrom = deadline + ROLLBACK_GRACE_MS;
    while (Date.now() < askFrom) {
      if (ctx.signal.aborted) break;
      await sleep(Math.min(1_000, askFrom - Date.now()));
    }
    const giveUp = Date.now() + ROLLBACK_POLL_MS;
    lastSaid = 0;
    while (Date.now() < giveUp) {
      const st = await attempt(agent.confirmState(id, 3_000));
      if (!(st instanceof Error) && st.state !== 'pending') {
        if (st.state === 'confirmed') return;
        return this.rolledBack(host, st, secs);
      }
      if (Date.now() - lastSaid >= 5_000) {
        ctx.progress(
          `waiting for ${host} to answer after its rollback (${Math.round((giveUp - Date.now()) / 1000)} s left)`,
        );
        lastSaid = Date.now();
      }
      await sleep(1_000);
    }
    throw new UnavailableError(
      `cut ${host}'s management path and ${host} has not answered since; it should have rolled the change back by itself after ${secs} s: check the host's console.`,
      `host/${host}`,
    );
  }

  private rolledBack(host: string, st: ConfirmState, secs: number): never {
    if (st.state === 'rollback-failed')
      throw new VmlinkError(
        'exec',
        `cut ${host}'s management path; ${host} tried to roll it back by itself after ${secs} s and failed: ${st.detail}.`,
        { subject: `host/${host}` },
      );
    throw new RolledBackError(
      `cut ${host}'s management path; ${host} rolled it back by itself after ${secs} s.`,
      `host/${host}`,
    );
  }

  private async vmAgent(name: string): Promise<{ agent: AgentClient; spec: Spec }> {
    const cur = await this.currentSpec();
    const vm = cur?.spec.vms.find((v) => v.name === name);
    if (!cur || !vm) throw new NotFoundError('vm', name);
    return { agent: agentFor(cur.spec, vm.host), spec: cur.spec };
  }
}

/** The agent action that carries out a plan step (without commit-confirm; see `actConfirmed`). */
export function toAction(step: Step): AgentAction {
  switch (step.kind) {
    case 'network.create':
    case 'network.update':
      return { kind: 'network.ensure', network: step.network, configHash: step.configHash };
    case 'network.delete':
      return { kind: 'network.delete', name: step.name };
    case 'vm.create':
    case 'vm.update':
      return { kind: 'vm.create', vm: step.vm, configHash: step.configHash };
    case 'vm.hotplug':
      return { kind: 'vm.hotplug', vm: step.vm, configHash: step.configHash };
    case 'vm.start':
      return { kind: 'vm.start', name: step.name };
    case 'vm.delete':
      return { kind: 'vm.delete', name: step.name };
    case 'vm.stop':
      return { kind: 'vm.stop', name: step.name, force: step.force };
    case 'uplink.configure':
      return { kind: 'uplink.configure', uplink: step.uplink, configHash: step.configHash };
  }
}

/** The promise's value, or the error it failed with. */
const attempt = <T>(p: Promise<T>): Promise<T | Error> =>
  p.catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));

/** Resolves after `ms` milliseconds. */
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
