// Running a plan: phase by phase, each host's steps in order, hosts in parallel; risky steps commit-confirmed; a
// VM this run created whose first start fails is removed again.
import type { ActionResult, AgentAction } from '../agent/wire.js';
import { stepPhase } from '../plan/diff.js';
import { formatStep } from '../plan/format.js';
import type { Plan, RiskyMark, Step } from '../plan/steps.js';
import { fromErrorBody, VmlinkError } from '../shared/errors.js';
import { AGENT_BATCH_MAX_ACTIONS } from '../shared/limits.js';
import type { Spec } from '../spec/schema.js';
import {
  actConfirmed,
  CONFIRM_TIMING,
  type ConfirmTiming,
  DEFAULT_CONFIRM_MS,
  RolledBackError,
} from './confirm.js';
import type { AgentFactory } from './hosts.js';
import type { Store } from './store/types.js';
import type { TaskContext } from './tasks.js';

/** What running a plan needs. */
export interface ExecuteContext {
  store: Store;
  agents: AgentFactory;
  /** The spec being applied: where its hosts' agents are. */
  spec: Spec;
  /** The spec applied before: where hosts that `spec` dropped are reached. */
  previous?: Spec | undefined;
  task: TaskContext;
  confirmTiming?: ConfirmTiming;
  /** VMs (`host/name`) this apply created: one whose first start fails is removed again (see `undoCreate`). */
  created?: Set<string>;
}

/**
 * Runs the plan: phase by phase (see `stepPhase`), different hosts at the same time. A host's steps of a phase go
 * to its agent in one request (commit-confirmed steps each alone, in their place), and only hosts with steps are
 * asked. After a failure no host starts another request; the error names the step that failed. Returns the number
 * of steps applied.
 */
export async function executePlan(plan: Plan, xIn: ExecuteContext): Promise<number> {
  const x: ExecuteContext = { ...xIn, created: new Set() };
  const total = plan.steps.length;
  const indexed = plan.steps.map((step, i) => ({ step, n: i + 1 }));
  let done = 0;
  let failure: unknown;
  const count = () => done++;
  for (let i = 0; i < indexed.length; ) {
    const phase = stepPhase(indexed[i]!.step);
    let j = i;
    while (j < indexed.length && stepPhase(indexed[j]!.step) === phase) j++;
    const byHost = new Map<string, NumberedStep[]>();
    for (const s of indexed.slice(i, j)) byHost.set(s.step.host, [...(byHost.get(s.step.host) ?? []), s]);
    await Promise.all(
      [...byHost.values()].map(async (steps) => {
        for (const chunk of chunks(steps)) {
          if (failure !== undefined) return;
          if (x.task.signal.aborted) {
            failure ??= new VmlinkError(
              'invalid-state',
              `cancelled after ${done} of ${total} steps; apply again to converge`,
            );
            return;
          }
          try {
            if (chunk.length === 1) {
              await runStep(chunk[0]!.step, chunk[0]!.n, total, x);
              count();
            } else await runSteps(chunk, total, x, count);
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

/** A plan step with its number in the plan. */
interface NumberedStep {
  step: Step;
  n: number;
}

/** A host's steps of one phase as requests: runs of plain steps together, each commit-confirmed step alone. */
function chunks(steps: readonly NumberedStep[]): NumberedStep[][] {
  const out: NumberedStep[][] = [];
  let run: NumberedStep[] = [];
  for (const s of steps) {
    if ((s.step as RiskyMark).risky) {
      if (run.length) out.push(run);
      out.push([s]);
      run = [];
    } else if (run.length === AGENT_BATCH_MAX_ACTIONS) {
      out.push(run);
      run = [s];
    } else run.push(s);
  }
  if (run.length) out.push(run);
  return out;
}

/** The agent (as the spec that knows the host places it) that carries out a step. */
function agentFor(step: Step, x: ExecuteContext) {
  // A host the new spec dropped is reached where the old spec put it (removed-host steps).
  const where = x.spec.hosts.some((h) => h.name === step.host) ? x.spec : (x.previous ?? x.spec);
  return x.agents(where, step.host);
}

/** Plain steps of one host in one request; each applied step is reported, the first failure thrown. */
async function runSteps(
  steps: readonly NumberedStep[],
  total: number,
  x: ExecuteContext,
  count: () => void,
): Promise<void> {
  const host = steps[0]!.step.host;
  x.task.progress(`${host}: applying ${steps.length} steps (${steps[0]!.n}-${steps.at(-1)!.n} of ${total})`);
  let results: ActionResult[];
  try {
    results = await agentFor(steps[0]!.step, x).actBatch(steps.map((s) => toAction(s.step)));
  } catch (e) {
    // The request itself failed: which of its steps ran is unknown until the next plan looks.
    throw await stepFailed(steps[0]!, total, e, x, `steps ${steps[0]!.n}-${steps.at(-1)!.n}`);
  }
  let failed: { s: NumberedStep; error: VmlinkError } | undefined;
  // An answer longer than the request is read no further than the request (and refused below).
  for (const [i, r] of results.slice(0, steps.length).entries()) {
    const s = steps[i]!;
    if (r.ok) {
      x.task.progress(`[${s.n}/${total}] ${formatStep(s.step)}`);
      noteCreated(s.step, x);
      count();
    } else failed ??= { s, error: fromErrorBody({ error: r.error }) };
  }
  if (failed) throw await stepFailed(failed.s, total, failed.error, x);
  if (results.length !== steps.length)
    throw await stepFailed(
      steps[Math.min(results.length, steps.length - 1)]!,
      total,
      new VmlinkError(
        'bad-response',
        `the agent of ${host} answered ${results.length} of ${steps.length} steps`,
      ),
      x,
    );
}

async function runStep(step: Step, n: number, total: number, x: ExecuteContext): Promise<void> {
  x.task.progress(`[${n}/${total}] ${formatStep(step)}`);
  const agent = agentFor(step, x);
  const mark = step as RiskyMark;
  try {
    if (mark.risky)
      await actConfirmed(
        agent,
        step.host,
        toAction(step),
        mark.confirmTimeoutMs ?? DEFAULT_CONFIRM_MS,
        x.task,
        x.confirmTiming ?? CONFIRM_TIMING,
      );
    else await agent.act(toAction(step));
  } catch (e) {
    throw await stepFailed({ step, n }, total, e, x);
  }
  noteCreated(step, x);
}

/** Remembers a VM this apply created. */
function noteCreated(step: Step, x: ExecuteContext): void {
  if (step.kind === 'vm.create') x.created?.add(`${step.host}/${step.vm.name}`);
}

/**
 * A VM this apply created whose first start failed (a pool volume it cannot open: a refused CHAP login, a portal
 * down) is deleted again, so the failed apply leaves no half-made VM behind. Says what happened, for the error.
 */
async function undoCreate(step: Step, x: ExecuteContext): Promise<string> {
  if (step.kind !== 'vm.start' || !x.created?.has(`${step.host}/${step.name}`)) return '';
  try {
    await agentFor(step, x).act({ kind: 'vm.delete', name: step.name });
    x.created.delete(`${step.host}/${step.name}`);
    await x.store.appendEvent(
      'apply.undone',
      `vm ${step.name} on ${step.host}: created by this apply, removed again`,
    );
    return `\nVM ${step.name} was created by this apply and has been removed again.`;
  } catch (e) {
    return `\nVM ${step.name} was created by this apply and could not be removed again: ${e instanceof Error ? e.message : String(e)}`;
  }
}

/** Records a failed step and the error to raise for it: what failed, where, and that nothing after it started. */
async function stepFailed(
  { step, n }: NumberedStep,
  total: number,
  e: unknown,
  x: ExecuteContext,
  which = `step ${n}/${total}`,
): Promise<Error> {
  const msg = e instanceof Error ? e.message : String(e);
  await x.store.appendEvent('apply.failed', `${formatStep(step)}: ${msg}`);
  const undone = await undoCreate(step, x);
  if (e instanceof RolledBackError)
    return new RolledBackError(
      `${which} (${formatStep(step)}) ${msg} Nothing after it was applied.`,
      `host/${step.host}`,
    );
  return new VmlinkError(
    e instanceof VmlinkError ? e.kind : 'internal',
    `${which} failed (${formatStep(step)} on ${step.host}): ${msg}${undone}\nNo step started after it; fix the cause and apply again to converge.`,
    { cause: e },
  );
}

/** The agent action that carries out a plan step (without commit-confirm; see `actConfirmed`). */
export function toAction(step: Step): AgentAction {
  switch (step.kind) {
    case 'network.create':
    case 'network.update':
      return { kind: 'network.ensure', network: step.network, configHash: step.configHash };
    case 'network.delete':
      return { kind: 'network.delete', name: step.name };
    case 'securityGroup.create':
    case 'securityGroup.update':
      return { kind: 'securityGroup.ensure', group: step.group, configHash: step.configHash };
    case 'securityGroup.delete':
      return { kind: 'securityGroup.delete', name: step.name };
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
    case 'tuning.configure':
      return { kind: 'tuning.configure', tuning: step.tuning };
    case 'pool.create':
    case 'pool.update':
      return { kind: 'pool.ensure', pool: step.pool, configHash: step.configHash };
    case 'pool.delete':
      return { kind: 'pool.delete', pool: step.pool };
    case 'volume.create':
      return { kind: 'volume.ensure', volume: step.volume };
    case 'volume.resize':
      return step.vm
        ? { kind: 'vm.resizeDisk', name: step.vm.name, disk: step.vm.disk, sizeMiB: step.sizeMiB }
        : { kind: 'volume.resize', pool: step.pool, name: step.name, sizeMiB: step.sizeMiB };
    case 'volume.delete':
      return { kind: 'volume.delete', pool: step.pool, name: step.name };
    case 'lb.create':
    case 'lb.update':
      return { kind: 'lb.ensure', lb: step.lb, configHash: step.configHash };
    case 'lb.delete':
      return { kind: 'lb.delete', name: step.name };
  }
}
