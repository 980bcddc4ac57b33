// `vmlink drill KIND TARGET -f SPEC`: a failure drill in the spec's lab, run by the controller that brought the lab
// up, rendered as a table (detection, each VM's way to another host, invariants) beside the reference times of
// vSphere HA and Proxmox VE. Exit 1 when an invariant failed or the lab was not restored.
import type { Command } from 'commander';
import { DrillKinds, type DrillReport, DrillReportSchema } from '../shared/cluster.js';
import { VmlinkError } from '../shared/errors.js';
import { runTask } from './client.js';
import { type Api, emit, progress, readSpec } from './io.js';
import { table } from './render.js';

/** What users compare with: vSphere HA declares a host failed after ~15 s and restarts its VMs right after. */
export const VSPHERE_HA_S = 15;
/** Proxmox VE HA's documented detection and restart: about two minutes. */
export const PROXMOX_HA_S = 120;

const secs = (s: number | undefined) => (s === undefined ? '-' : `${s.toFixed(1)} s`);

/** The human rendering of a drill's report. */
export function renderDrillReport(r: DrillReport): string {
  const out: string[] = [`Drill ${r.kind} of ${r.target} (started ${r.startedAt})`];
  if (r.kind === 'controller-failure') out.push(`Takeover:  ${secs(r.takeoverS)} until a standby was active`);
  else out.push(`Detected:  ${secs(r.detectedS)}`);
  if (r.vms.length) {
    const partition = r.kind === 'partition';
    out.push(
      '',
      table(
        ['VM', 'from', 'to', ...(partition ? ['stopped there'] : []), 'QEMU running', 'guest answers'],
        r.vms.map((v) => [
          v.vm,
          v.from,
          v.to ?? '(not restarted)',
          ...(partition ? [secs(v.stoppedS)] : []),
          secs(v.restartedS),
          secs(v.guestAnswersS),
        ]),
      ),
    );
    const restarted = r.vms.map((v) => v.restartedS).filter((s): s is number => s !== undefined);
    if (restarted.length)
      out.push(
        `Slowest restart ${secs(Math.max(...restarted))}; for reference: vSphere HA ~${VSPHERE_HA_S} s, Proxmox VE HA ~${PROXMOX_HA_S} s`,
      );
  }
  out.push('', 'Invariants:');
  const width = Math.max(...r.invariants.map((i) => i.name.length));
  for (const i of r.invariants) out.push(`  ${i.ok ? '✓' : '✗'} ${i.name.padEnd(width)}  ${i.detail}`);
  out.push(
    '',
    `Sampled every ${r.samples.everyMs} ms (${r.samples.count} samples). Lab restored: ${r.restored ? 'yes' : 'NO'}.`,
  );
  if (r.notes.length) out.push('Notes:', ...r.notes.map((n) => `  - ${n}`));
  return out.join('\n');
}

/** Whether a report is a pass: every invariant held and the lab was restored. */
export const drillPassed = (r: DrillReport): boolean => r.restored && r.invariants.every((i) => i.ok);

/** `vmlink drill ...`. */
export function addDrillCommands(program: Command, api: Api): void {
  program
    .command('drill')
    .description(
      "inject a failure in the spec's lab (run against the controller that brought the lab up), measure detection and recovery from outside, check that no VM ran twice, none was lost and no disk had two writers, then restore the lab",
    )
    .argument('<kind>', DrillKinds.join(' | '))
    .argument(
      '<target>',
      'host (host-failure, partition), controller or `active` (controller-failure), etcd member',
    )
    .requiredOption('-f, --file <spec>', 'the lab cluster spec (as given to `lab up` and `apply`)')
    .option('--during-apply', 'controller-failure: kill the active controller while it applies the spec')
    .option('--json', 'machine-readable output')
    .action(
      async (kind: string, target: string, o: { file: string; duringApply?: boolean; json?: boolean }) => {
        if (!(DrillKinds as readonly string[]).includes(kind))
          throw new VmlinkError('invalid', `drill kind must be one of ${DrillKinds.join(', ')}, got ${kind}`);
        const r = await runTask(
          api(),
          '/v1/drills',
          { ...readSpec(o.file), kind, target, duringApply: !!o.duringApply },
          DrillReportSchema,
          progress(!!o.json),
        );
        emit(!!o.json, r, () => renderDrillReport(r));
        if (!drillPassed(r)) process.exitCode = 1;
      },
    );
}
