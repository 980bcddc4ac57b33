// `vmlink vm move-disk NAME DISK --to-pool POOL [--json]`: a VM's disk moves into a dir pool of its host (live while it runs)
// (a task with its progress); the report says where it went, how long it took and what the spec must say next.
import type { Command } from 'commander';
import { type MoveDiskReport, MoveDiskReportSchema } from '../controller/wire-move-disk.js';
import { runTask } from './client.js';
import { type Api, emit, progress } from './io.js';

/** The report as `vm move-disk` prints it. */
export function renderMoveDisk(r: MoveDiskReport): string {
  const held =
    r.allocatedMiB === undefined ? '' : `, ${r.allocatedMiB.toFixed(0)} MiB allocated in the new volume`;
  return [
    `vm ${r.vm}: disk ${r.disk} moved from ${r.from} to pool ${r.pool} (volume ${r.volume}) on ${r.host} in ${(r.ms / 1000).toFixed(1)} s${held}`,
    `  next: ${r.next}`,
  ].join('\n');
}

/** Adds `vm move-disk` to `program`'s `vm` command. */
export function addMoveDiskCommands(program: Command, api: Api): void {
  const vm =
    program.commands.find((c) => c.name() === 'vm') ?? program.command('vm').description('virtual machines');
  vm.command('move-disk')
    .description(
      "move a VM's disk into a dir pool of its host: live while it runs (no restart), a copy while it is stopped. Order: put the pool in the spec's disk, `vm move-disk`, then apply (no changes); an apply before the move refuses rather than restart onto an empty disk",
    )
    .argument('<name>', 'the VM')
    .argument('<disk>', 'the disk (vms[].disks[].name)')
    .requiredOption('--to-pool <pool>', "the target: a dir pool of the VM's host (its volume is <vm>-<disk>)")
    .option('--json', 'machine-readable output')
    .action(async (name: string, disk: string, o: { toPool: string; json?: boolean }) => {
      const path = `/v1/vms/${encodeURIComponent(name)}/disks/${encodeURIComponent(disk)}/move`;
      const r = await runTask(api(), path, { pool: o.toPool }, MoveDiskReportSchema, progress(!!o.json));
      emit(!!o.json, r, () => renderMoveDisk(r));
    });
}
