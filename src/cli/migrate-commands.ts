// `vmlink vm migrate NAME --to HOST [--explain] [--json]`: the pre-flight explain, then the live migration as a task
// with its progress; the report says QEMU's downtime figure and the total time.
import type { Command } from 'commander';
import { MigrationExplainSchema, MigrationReportSchema } from '../controller/wire-migrate.js';
import { errorStatus } from '../shared/errors.js';
import { runTask } from './client.js';
import { type Api, emit, progress } from './io.js';
import { renderExplain } from './render-migrate.js';

/** Adds `vm migrate` to `program`'s `vm` command. */
export function addMigrateCommands(program: Command, api: Api): void {
  const vm =
    program.commands.find((c) => c.name() === 'vm') ?? program.command('vm').description('virtual machines');
  vm.command('migrate')
    .description(
      'live-migrate a running VM to another host: a pre-flight explain (CPU, devices, disks, networks, memory, estimate), then QEMU migration over mutual TLS; the owner record moves with it',
    )
    .argument('<name>', 'the VM')
    .requiredOption('--to <host>', 'the target host')
    .option('--explain', 'only the pre-flight checks, each blocker with its fix (changes nothing)')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { to: string; explain?: boolean; json?: boolean }) => {
      const path = `/v1/vms/${encodeURIComponent(name)}/migrate`;
      if (o.explain) {
        const e = await api().get(`${path}?to=${encodeURIComponent(o.to)}`, MigrationExplainSchema);
        emit(!!o.json, e, () => renderExplain(e));
        // Blocked: a non-zero exit, so scripts can ask before they move anything.
        if (!e.ok) process.exitCode = errorStatus['invalid-state'].exit;
        return;
      }
      const r = await runTask(api(), path, { to: o.to }, MigrationReportSchema, progress(!!o.json));
      emit(!!o.json, r, () =>
        [
          `vm ${r.vm} migrated ${r.from} -> ${r.to} in ${(r.totalMs / 1000).toFixed(1)} s`,
          `  QEMU downtime: ${r.downtimeMs ?? '?'} ms (limit 300 ms), QEMU total ${r.qemuTotalMs ?? '?'} ms, ${(r.transferredBytes / 1048576).toFixed(0)} MiB sent`,
          r.blockMigration
            ? `  local disks copied (block migration): ${((r.diskCopiedBytes ?? 0) / 1048576).toFixed(0)} MiB`
            : '',
          r.token ? `  owner record token ${r.token}` : '',
          r.storage?.fenced.length ? `  iscsi volumes fenced to ${r.to}: ${r.storage.fenced.join(', ')}` : '',
          r.storage?.error ? `  warning: iscsi volumes still let ${r.from} in: ${r.storage.error}` : '',
        ]
          .filter(Boolean)
          .join('\n'),
      );
    });
}
