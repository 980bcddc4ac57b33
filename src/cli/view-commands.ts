// Commands that show or act on what the controller knows: status, events, networks, VMs.
import type { Command } from 'commander';
import {
  ConsoleTailSchema,
  EventsSchema,
  GuestExecResultSchema,
  NetworkListSchema,
  NetworkViewSchema,
  OkSchema,
  SecurityGroupListSchema,
  StatusSchema,
  VmListSchema,
  type VmView,
} from '../controller/wire.js';
import { VmlinkError } from '../shared/errors.js';
import { sleep } from '../shared/time.js';
import { attachConsole } from './console-commands.js';
import { type Api, emit, out } from './io.js';
import { table } from './render.js';
import { renderLbStatus } from './render-lb.js';
import { renderTuning } from './render-tuning.js';

/** `vmlink status|events`. */
export function addStatusCommands(program: Command, api: Api): void {
  program
    .command('status')
    .description(
      "hosts of the applied spec, their agents and capabilities (from the controller's kept reports, with their age)",
    )
    .option('--json', 'machine-readable output')
    .option('--live', 'ask every agent now instead (slower on a large fleet)')
    .option(
      '--full',
      "each host's whole report in --json (VMs' and networks' configs, ports, CPU placement, DHCP leases, devices)",
    )
    .action(async (o: { json?: boolean; live?: boolean; full?: boolean }) => {
      const query = [...(o.live ? ['live=true'] : []), ...(o.full ? ['full=true'] : [])].join('&');
      const r = await api().get(`/v1/status${query ? `?${query}` : ''}`, StatusSchema);
      emit(!!o.json, r, () => {
        if (!r.spec) return 'No spec applied yet. Apply one with `vmlink apply -f SPEC`.';
        return [
          `Spec: ${r.spec.source} (applied ${r.spec.appliedAt})`,
          table(
            [
              'host',
              'agent',
              'last seen',
              'report',
              'accel',
              'cpus',
              'memory',
              'backends',
              'networks',
              'vms',
              'note',
            ],
            r.hosts.map((h) => [
              h.name,
              h.reachable ? 'up' : 'UNREACHABLE',
              h.lastSeen ? ago(h.lastSeen) : undefined,
              h.report ? reportAge(h.reportAgeMs) : undefined,
              h.report?.capabilities.accelerator,
              h.report?.capabilities.cpus,
              h.report ? `${h.report.capabilities.memoryMiB} MiB` : undefined,
              h.report?.capabilities.backends?.join(','),
              h.report?.networks.length,
              h.report?.vms.length,
              h.reachable ? h.report?.capabilities.acceleratorReason : h.error?.split('\n')[0],
            ]),
          ),
          ...renderTuning(r.hosts),
          ...renderLbStatus(r.hosts),
        ].join('\n');
      });
    });

  program
    .command('events')
    .description('recent events: applies, failures, hosts going up and unreachable')
    .option('-n, --limit <n>', 'how many', '50')
    .option('--json', 'machine-readable output')
    .action(async (o: { limit: string; json?: boolean }) => {
      const r = await api().get(`/v1/events?limit=${Number(o.limit)}`, EventsSchema);
      emit(!!o.json, r, () =>
        table(
          ['time', 'kind', 'message'],
          r.map((e) => [e.time, e.kind, e.message]),
        ),
      );
    });
}

/** `vmlink security-group list`. */
export function addSecurityGroupCommands(program: Command, api: Api): void {
  const group = program.command('security-group').description('security groups');
  group
    .command('list')
    .description(
      'security groups of the applied spec, and whether each host holding one has it as the spec says',
    )
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api().get('/v1/security-groups', SecurityGroupListSchema);
      emit(!!o.json, r, () =>
        table(
          ['name', 'rules', 'members', 'hosts', 'description'],
          r.map((g) => [
            g.name,
            g.rules,
            g.members,
            g.hosts
              .map((h) => `${h.host}:${h.state}${h.problems ? ` (${h.problems.join('; ')})` : ''}`)
              .join(', '),
            g.description ?? '',
          ]),
        ),
      );
    });
}

/** `vmlink network list|show`. */
export function addNetworkCommands(program: Command, api: Api): void {
  const network = program.command('network').description('networks');
  network
    .command('list')
    .description('networks of the applied spec')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api().get('/v1/networks', NetworkListSchema);
      emit(!!o.json, r, () =>
        table(
          ['name', 'mode', 'backend', 'hosts'],
          r.map((n) => [n.name, n.mode, n.backend, n.hosts.join(',')]),
        ),
      );
    });
  network
    .command('show <name>')
    .description('a network as each member host observes it; --flows adds its OpenFlow rules (ovs backend)')
    .option('--flows', 'show the OpenFlow rules on each host')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { flows?: boolean; json?: boolean }) => {
      const r = await api().get(
        `/v1/networks/${encodeURIComponent(name)}?flows=${o.flows ? 'true' : 'false'}`,
        NetworkViewSchema,
      );
      emit(!!o.json, r, () => {
        const head = `${r.name}: ${r.spec.mode} network, backend ${r.spec.backend}`;
        const rows = table(
          ['host', 'bridge', 'taps', 'state'],
          r.hosts.map((h) => [
            h.host,
            h.observed?.bridge,
            h.ports?.map((p) => `${p.tap} (${p.vm})`).join(', '),
            h.error
              ? `UNREACHABLE: ${h.error}`
              : !h.observed
                ? 'absent'
                : h.observed.problems.length
                  ? h.observed.problems.join('; ')
                  : 'ok',
          ]),
        );
        const flows = r.hosts
          .filter((h) => h.flows !== undefined)
          .map((h) => `\nFlows on ${h.host}:\n${h.flows!.trimEnd()}`);
        return [head, rows, ...flows].join('\n');
      });
    });
}

/** `10.0.0.5/24 (natnet), 192.168.71.50 (lan, lease)`: each NIC's addresses, and where they come from if not the guest. */
function nicAddresses(nics: VmView['nics']): string {
  const from = { 'guest-agent': '', 'dhcp-lease': ', lease', spec: ', from spec', none: '' } as const;
  return nics
    .filter((n) => n.addresses.length)
    .map((n) => `${n.addresses.join(' ')} (${n.network}${from[n.addressSource]})`)
    .join(', ');
}

/** `vmlink vm list|start|stop|exec|console`. */
export function addVmCommands(program: Command, api: Api): void {
  const vm = program.command('vm').description('virtual machines');
  vm.command('list')
    .description(
      "VMs: desired state (spec) and observed state (host), with each NIC's addresses (from the controller's kept reports)",
    )
    .option('--json', 'machine-readable output')
    .option('--live', 'ask every agent now instead (slower on a large fleet)')
    .action(async (o: { json?: boolean; live?: boolean }) => {
      const r = await api().get(`/v1/vms${o.live ? '?live=true' : ''}`, VmListSchema);
      const oldest = Math.max(0, ...r.map((v) => v.reportAgeMs ?? 0));
      emit(!!o.json, r, () =>
        [
          table(
            ['name', 'host', 'state', 'desired', 'cpus', 'memory', 'networks', 'addresses', 'problems'],
            r.map((v) => [
              v.name,
              v.host,
              v.state,
              v.desired,
              v.cpus,
              v.memoryMiB === undefined ? undefined : `${v.memoryMiB} MiB`,
              v.networks.join(','),
              nicAddresses(v.nics) || undefined,
              v.problems.join('; ') || undefined,
            ]),
          ),
          ...(oldest > 0 ? [`(host reports up to ${reportAge(oldest)}; --live asks every host now)`] : []),
        ].join('\n'),
      );
    });
  vm.command('start <name>')
    .description('start a VM')
    .action(async (name: string) => {
      await api().post(`/v1/vms/${encodeURIComponent(name)}/start`, {}, OkSchema);
      out(`${name} started`);
    });
  vm.command('stop <name>')
    .description('stop a VM: ACPI power-down, then quit after 30 s; --force stops it at once')
    .option('--force', 'stop at once (like pulling the plug)')
    .action(async (name: string, o: { force?: boolean }) => {
      await api().post(`/v1/vms/${encodeURIComponent(name)}/stop`, { force: !!o.force }, OkSchema);
      out(`${name} stopped`);
    });
  vm.command('exec <name> <argv...>')
    .description('run a command in a guest through its guest agent: vmlink vm exec web1 -- ip addr')
    .option('--timeout <seconds>', 'give up after this long', '30')
    .action(async (name: string, argv: string[], o: { timeout: string }) => {
      const timeoutMs = Math.round(Number(o.timeout) * 1000);
      if (!Number.isFinite(timeoutMs) || timeoutMs < 100 || timeoutMs > 600_000)
        throw new VmlinkError('invalid', `--timeout must be between 0.1 and 600 seconds, not ${o.timeout}`);
      // The HTTP call outlives the guest command by the controller's and agent's own margins.
      const r = await api().post(
        `/v1/vms/${encodeURIComponent(name)}/exec`,
        { argv, timeoutMs },
        GuestExecResultSchema,
        timeoutMs + 30_000,
      );
      process.stdout.write(r.stdout);
      process.stderr.write(r.stderr);
      process.exitCode = r.exitCode;
    });
  vm.command('console <name>')
    .description(
      "attach to a VM's serial console (raw terminal; Ctrl-] detaches; operator role to type, others watch); --log prints its log instead",
    )
    .option('--log', "print the console's log instead of attaching")
    .option('-n, --tail <bytes>', 'with --log: how much of the end to show', '65536')
    .option('--follow', 'with --log: keep printing new output')
    .option('--read-only', 'attach without typing (even when the role may)')
    .action(
      async (name: string, o: { log?: boolean; tail: string; follow?: boolean; readOnly?: boolean }) => {
        if (!o.log) return attachConsole(api(), name, { readOnly: !!o.readOnly });
        let seen = '';
        for (;;) {
          const r = await api().get(
            `/v1/vms/${encodeURIComponent(name)}/console?tail=${Number(o.tail)}`,
            ConsoleTailSchema,
          );
          // The log only grows (until the tail window slides), so print what follows the last output.
          const at = seen ? r.log.lastIndexOf(seen.slice(-200)) : -1;
          process.stdout.write(at >= 0 ? r.log.slice(at + Math.min(200, seen.length)) : r.log);
          seen = r.log;
          if (!o.follow) return;
          await sleep(500);
        }
      },
    );
}

/** "12 s ago" for an ISO time. */
/** A report's age as `status` shows it: `live` when asked for this answer. */
function reportAge(ms: number | undefined): string {
  if (ms === undefined || ms === 0) return 'live';
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s old` : `${Math.round(s / 60)} min old`;
}

function ago(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : iso;
}
