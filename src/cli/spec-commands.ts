// Commands that send a spec or start a long operation: lab up/down, plan, apply, destroy, verify.
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import {
  ApplyResultSchema,
  DESTRUCTIVE_PLAN_SUBJECT,
  LabDownResultSchema,
  LabUpResultSchema,
  PlanResultSchema,
  ThroughputResultSchema,
  VerifyResultSchema,
} from '../controller/wire.js';
import { VmlinkError } from '../shared/errors.js';
import { runTask } from './client.js';
import { type Api, emit, progress, readSpec } from './io.js';
import { renderMatrix, renderThroughput } from './render.js';

/** `vmlink lab up|relay|down`; the relay is a process the composition root runs. */
export function addLabCommands(
  program: Command,
  api: Api,
  relay: (listen: string[], to: string[]) => Promise<void>,
): void {
  const lab = program
    .command('lab')
    .description('simulated physical machines (network namespaces) for demos and tests');
  lab
    .command('up')
    .description("build the spec's lab and start (or restart) its host agents")
    .requiredOption('-f, --file <spec>', 'spec file')
    .option('--json', 'machine-readable output')
    .action(async (o: { file: string; json?: boolean }) => {
      const r = await runTask(api(), '/v1/lab/up', readSpec(o.file), LabUpResultSchema, progress(!!o.json));
      emit(!!o.json, r, () =>
        [
          `Lab is up: ${r.namespaces.length} namespaces (${r.namespaces.join(', ')}).`,
          ...(r.etcd ? [`etcd: ${r.etcd.join(', ')}`] : []),
          ...(r.controllers
            ? [
                `cluster controllers: ${r.controllers.join(', ')}`,
                `  export VMLINK_SOCKET=${r.controllers.join(',')}`,
              ]
            : []),
        ].join('\n'),
      );
    });
  lab
    .command('relay')
    .description(
      "the lab's management relay (started by `lab up` in the management namespace): unix socket -> agent TCP",
    )
    .requiredOption('--listen <url...>', 'unix:///path.sock to listen on (repeat, one per --to)')
    .requiredOption('--to <url...>', 'http://ADDR:PORT the matching --listen leads to (repeat)')
    .action(async (o: { listen: string[]; to: string[] }) => {
      await relay(o.listen, o.to);
    });
  lab
    .command('down')
    .description('remove the lab and everything in it: VMs, networks, agents, namespaces and state files')
    .requiredOption('-f, --file <spec>', 'spec file')
    .option('--json', 'machine-readable output')
    .action(async (o: { file: string; json?: boolean }) => {
      const r = await runTask(
        api(),
        '/v1/lab/down',
        readSpec(o.file),
        LabDownResultSchema,
        progress(!!o.json),
      );
      emit(!!o.json, r, () =>
        r.removed.length
          ? `Lab removed (${r.removed.length} namespaces).`
          : 'Nothing to remove: the lab was not up.',
      );
    });
}

/** `vmlink plan|apply|destroy`. */
export function addSpecCommands(program: Command, api: Api): void {
  program
    .command('plan')
    .description('validate a spec and show what apply would change')
    .requiredOption('-f, --file <spec>', 'spec file')
    .option('--json', 'machine-readable output')
    .action(async (o: { file: string; json?: boolean }) => {
      const r = await api().post('/v1/plan', readSpec(o.file), PlanResultSchema);
      emit(!!o.json, r, () => r.text);
    });

  program
    .command('apply')
    .description('plan and apply a spec; a repeated apply reports no changes')
    .requiredOption('-f, --file <spec>', 'spec file')
    .option('--allow-destroy', 'go ahead although the plan deletes VMs, their disks or networks VMs use')
    .option('--json', 'machine-readable output')
    .action(async (o: { file: string; json?: boolean; allowDestroy?: boolean }) => {
      const spec = readSpec(o.file);
      const apply = (allowDestroy: boolean) =>
        runTask(api(), '/v1/apply', { ...spec, allowDestroy }, ApplyResultSchema, progress(!!o.json));
      const r = await apply(!!o.allowDestroy).catch(async (e: unknown) => {
        // Refused for destroying data: a person at a terminal may say yes; a script must pass --allow-destroy.
        if (!isDestructiveRefusal(e) || !process.stdin.isTTY || o.json) throw e;
        if (!(await confirmDestroy(e.message))) throw e;
        return apply(true);
      });
      emit(!!o.json, r, () =>
        r.applied === 0 ? 'no changes' : `Apply complete: ${r.applied} step(s) applied.`,
      );
    });

  program
    .command('destroy')
    .description('remove the VMs and networks of a spec (default: the last applied one)')
    .option('-f, --file <spec>', 'spec file')
    .option('--json', 'machine-readable output')
    .action(async (o: { file?: string; json?: boolean }) => {
      const body = o.file ? readSpec(o.file) : {};
      const r = await runTask(api(), '/v1/destroy', body, ApplyResultSchema, progress(!!o.json));
      emit(!!o.json, r, () => `Destroy complete: ${r.applied} step(s) applied.`);
    });
}

/** `vmlink verify`: the matrix, or throughput between two endpoints. */
export function addVerifyCommand(program: Command, api: Api): void {
  program
    .command('verify')
    .description(
      'measure the connectivity matrix (expected vs observed, with RTT; security groups judged, their rule ports probed over TCP; load balancers: VIP held once and reached, answers from UP backends only, failed backends taken out); exits non-zero on any mismatch',
    )
    .option('--json', 'machine-readable output')
    .option('--throughput <endpoints...>', 'measure TCP throughput FROM TO with iperf3 instead of the matrix')
    .option('--seconds <n>', 'iperf3 duration in seconds (with --throughput)', '3')
    .action(async (o: { json?: boolean; throughput?: string[]; seconds: string }) => {
      if (o.throughput) {
        if (o.throughput.length !== 2)
          throw new VmlinkError('invalid', '--throughput takes two endpoints: FROM TO');
        const [from, to] = o.throughput;
        const t = await runTask(
          api(),
          '/v1/verify/throughput',
          { from, to, seconds: Number(o.seconds) },
          ThroughputResultSchema,
          progress(!!o.json),
        );
        emit(!!o.json, t, () => renderThroughput(t));
        return;
      }
      const r = await runTask(api(), '/v1/verify', {}, VerifyResultSchema, progress(!!o.json));
      emit(!!o.json, r, () => renderMatrix(r));
      if (!r.ok) process.exitCode = 1;
    });
}

/** Whether `e` is the controller refusing an apply that destroys data (see `DESTRUCTIVE_PLAN_SUBJECT`). */
const isDestructiveRefusal = (e: unknown): e is VmlinkError =>
  e instanceof VmlinkError && e.kind === 'conflict' && e.subject === DESTRUCTIVE_PLAN_SUBJECT;

/** Shows what an apply would destroy and asks; only `yes` goes ahead. */
async function confirmDestroy(refusal: string): Promise<boolean> {
  const lost = refusal.split('\n').filter((l) => !l.startsWith('Nothing was changed'));
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${lost.join('\n')}\nDestroy this? Only 'yes' goes ahead: `);
    return answer.trim() === 'yes';
  } finally {
    rl.close();
  }
}
