// `vmlink ha status` and `vmlink host maintenance HOST on|off`: the cluster's HA state and draining a host.
import type { Command } from 'commander';
import { type HaView, HaViewSchema, MaintenanceAnswerSchema } from '../controller/wire-ha.js';
import { VmlinkError } from '../shared/errors.js';
import { type Api, emit } from './io.js';

/** `vmlink ha status` as text: VMs with owner, token and policy; hosts with lease and maintenance; last decisions. */
export function renderHaStatus(v: HaView): string {
  if (!v.cluster) return 'The applied spec declares no cluster: HA is off.';
  const lines = ['VM             OWNER      TOKEN        POLICY    PRIO  STATE'];
  for (const vm of v.vms) {
    const owner = vm.owner
      ? `${vm.owner.host}${vm.owner.from ? ` (from ${vm.owner.from}, ${vm.owner.reason})` : ''}`
      : '-';
    lines.push(
      [
        vm.name.padEnd(14),
        owner.padEnd(10),
        (vm.owner?.token ?? '-').padEnd(12),
        vm.policy.padEnd(9),
        String(vm.priority).padEnd(5),
        vm.userStopped ? `stopped by ${vm.userStopped.by} at ${vm.userStopped.at}` : vm.desiredState,
      ].join(' '),
    );
  }
  lines.push('', 'HOST           LEASE            MAINTENANCE');
  for (const h of v.hosts)
    lines.push(
      [
        h.name.padEnd(14),
        (h.live === undefined
          ? 'unknown'
          : h.live
            ? `live ${Math.round((h.leaseAgeMs ?? 0) / 1000)}s`
            : 'FAILED'
        ).padEnd(16),
        h.maintenance ? `on since ${h.maintenance.since} (${h.maintenance.by})` : '-',
      ].join(' '),
    );
  if (v.decisions.length) {
    lines.push('', 'Last HA decisions:');
    for (const e of v.decisions) lines.push(`  ${e.time} ${e.kind} ${e.message}`);
  }
  return lines.join('\n');
}

/** `vmlink ha ...`. */
export function addHaCommands(program: Command, api: Api): void {
  const ha = program
    .command('ha')
    .description('high availability: owners, leases, maintenance, HA decisions');
  ha.command('status')
    .description(
      "each VM's owner host, fencing token and HA policy; hosts' leases and maintenance; the last decisions",
    )
    .option('--decisions <n>', 'how many recent HA decisions to show', '20')
    .option('--json', 'machine-readable output')
    .action(async (o: { decisions: string; json?: boolean }) => {
      const n = Number(o.decisions);
      if (!Number.isInteger(n) || n < 0 || n > 500)
        throw new VmlinkError(
          'invalid',
          `--decisions must be a whole number from 0 to 500, got ${o.decisions}`,
        );
      const v = await api().get(`/v1/ha?decisions=${n}`, HaViewSchema);
      emit(!!o.json, v, () => renderHaStatus(v));
    });
}

/** `vmlink host maintenance HOST on|off` (added to the `host` command group). */
export function addMaintenanceCommand(host: Command, api: Api): void {
  host
    .command('maintenance')
    .description('on: HA moves HOST’s VMs to other hosts and places nothing there; off: HOST takes VMs again')
    .argument('<host>', 'host name as in the spec')
    .argument('<state>', 'on or off')
    .option('--json', 'machine-readable output')
    .action(async (name: string, state: string, o: { json?: boolean }) => {
      if (state !== 'on' && state !== 'off')
        throw new VmlinkError('invalid', `maintenance takes on or off, got ${state}`);
      const r = await api().put(
        `/v1/hosts/${encodeURIComponent(name)}/maintenance`,
        { on: state === 'on' },
        MaintenanceAnswerSchema,
      );
      emit(!!o.json, r, () =>
        r.on
          ? [
              `${r.host} is in maintenance: HA places nothing there.`,
              r.moves.length ? `Moving: ${r.moves.join(', ')}` : 'No HA VM to move.',
              ...(r.stays.length ? [`Staying (no HA policy): ${r.stays.join(', ')}`] : []),
              'Follow with `vmlink ha status` or `vmlink events`.',
            ].join('\n')
          : `${r.host} is out of maintenance: HA may place VMs there again.`,
      );
    });
}
