import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import type { ThroughputResult } from '../agent/throughput.js';
import type { NetworkView, PlanResult, VmView } from '../controller/controller.js';
import type { VerifyResult } from '../controller/verify.js';
import type { GuestExecResult } from '../drivers/hypervisor/types.js';
import { SystemRunner } from '../exec/runner.js';
import { errorStatus, VmlinkError } from '../shared/errors.js';
import { controllerDb, controllerSocket, runDir } from '../shared/paths.js';
import { VERSION } from '../shared/version.js';
import { controllerClient, explainUnavailable, runTask } from './client.js';
import { doctor } from './doctor.js';
import { renderMatrix, renderThroughput, table } from './render.js';

const program = new Command('vmlink')
  .description(
    'Virtualization control plane: describe hosts, networks and VMs in one spec, apply it, and prove the connectivity.',
  )
  .version(VERSION)
  .addOption(
    new Option('--socket <path>', 'controller API socket (or http://host:port with VMLINK_TOKEN)')
      .default(controllerSocket())
      .env('VMLINK_SOCKET'),
  )
  .showHelpAfterError();

const api = () => controllerClient(program.opts<{ socket: string }>().socket);
const readSpec = (file: string) => {
  try {
    return { spec: readFileSync(file, 'utf8'), source: file };
  } catch (e) {
    throw new VmlinkError(
      'invalid',
      `cannot read spec file ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`,
    );
  }
};
const out = (s: string) => process.stdout.write(`${s}\n`);
const progress = (json: boolean) => (line: string) =>
  (json ? process.stderr : process.stdout).write(`${line}\n`);
const emit = (json: boolean, value: unknown, human: () => string) =>
  out(json ? JSON.stringify(value, null, 2) : human());

program
  .command('daemon')
  .description('run the controller (REST API on a unix socket, optionally TCP with a bearer token)')
  .option('--db <path>', 'SQLite database', controllerDb())
  .option('--listen <url>', 'also listen on TCP, e.g. http://127.0.0.1:7070 (requires --token-file)')
  .option('--token-file <path>', 'file holding the bearer token for the TCP listener')
  .option(
    '--agent-token-file <path>',
    "file holding the bearer token sent to agents outside a lab (lab agents use their lab's token)",
  )
  .option('--heartbeat-ms <ms>', 'host heartbeat period; a host missing 3 in a row is unreachable', '5000')
  .option('--detach', 'start in the background and return once the API answers')
  .option('--stop', 'stop a controller started with --detach (VMs and lab keep running)')
  .action(async (o: DaemonCliOptions) => {
    const socket = program.opts<{ socket: string }>().socket;
    if (o.stop) return stopDaemon();
    if (o.listen && !o.tokenFile)
      throw new VmlinkError(
        'invalid',
        '--listen requires --token-file: the TCP API is never open without a token',
      );
    const heartbeatMs = Number(o.heartbeatMs);
    if (!Number.isInteger(heartbeatMs) || heartbeatMs < 100)
      throw new VmlinkError('invalid', `--heartbeat-ms must be a whole number >= 100, got ${o.heartbeatMs}`);
    if (o.detach) return detachDaemon(socket, o);
    const { runDaemon } = await import('../controller/main.js');
    const token = o.tokenFile ? readFileSync(o.tokenFile, 'utf8').trim() : undefined;
    const agentToken = o.agentTokenFile ? readFileSync(o.agentTokenFile, 'utf8').trim() : undefined;
    await runDaemon({
      socket,
      db: o.db,
      heartbeatMs,
      ...(o.listen ? { tcp: o.listen } : {}),
      ...(token ? { token } : {}),
      ...(agentToken ? { agentToken } : {}),
    });
  });

program
  .command('agent')
  .description("run a host's agent (the lab starts one per host inside its namespace)")
  .requiredOption('--host <name>', 'host name as in the spec')
  .requiredOption('--listen <url>', 'local admin socket, unix:///path.sock (no token)')
  .option('--listen-tcp <url>', "the controller's listener, http://ADDR:7443 (requires --token-file)")
  .option('--token-file <path>', 'file holding the bearer token the TCP listener requires')
  .option(
    '--uplink <nic>',
    "the host's uplink NIC (reported, and managed when the spec sets hosts[].network)",
    'eth0',
  )
  .requiredOption('--state-dir <dir>', 'where VMs and networks keep their files')
  .action(
    async (o: {
      host: string;
      listen: string;
      listenTcp?: string;
      tokenFile?: string;
      uplink: string;
      stateDir: string;
    }) => {
      if (!o.listen.startsWith('unix://'))
        throw new VmlinkError(
          'invalid',
          `--listen must be unix:///path.sock, got ${o.listen} (TCP: --listen-tcp)`,
        );
      if (o.listenTcp && !o.tokenFile)
        throw new VmlinkError(
          'invalid',
          '--listen-tcp requires --token-file: the TCP API is never open without a token',
        );
      const { runAgent } = await import('../agent/main.js');
      await runAgent({
        host: o.host,
        listen: o.listen,
        stateDir: o.stateDir,
        uplink: o.uplink,
        ...(o.listenTcp ? { listenTcp: o.listenTcp } : {}),
        ...(o.tokenFile ? { tokenFile: o.tokenFile } : {}),
      });
    },
  );

const lab = program
  .command('lab')
  .description('simulated physical machines (network namespaces) for demos and tests');
lab
  .command('up')
  .description("build the spec's lab and start (or restart) its host agents")
  .requiredOption('-f, --file <spec>', 'spec file')
  .option('--json', 'machine-readable output')
  .action(async (o: { file: string; json?: boolean }) => {
    const r = await runTask<{ namespaces: string[] }>(
      api(),
      '/v1/lab/up',
      readSpec(o.file),
      progress(!!o.json),
    );
    emit(!!o.json, r, () => `Lab is up: ${r.namespaces.length} namespaces (${r.namespaces.join(', ')}).`);
  });
lab
  .command('relay')
  .description(
    "the lab's management relay (started by `lab up` in the management namespace): unix socket -> agent TCP",
  )
  .requiredOption('--listen <url...>', 'unix:///path.sock to listen on (repeat, one per --to)')
  .requiredOption('--to <url...>', 'http://ADDR:PORT the matching --listen leads to (repeat)')
  .action(async (o: { listen: string[]; to: string[] }) => {
    const { pairRoutes, runRelay } = await import('../lab/relay.js');
    await runRelay(pairRoutes(o.listen, o.to));
  });
lab
  .command('down')
  .description('remove the lab and everything in it: VMs, networks, agents, namespaces and state files')
  .requiredOption('-f, --file <spec>', 'spec file')
  .option('--json', 'machine-readable output')
  .action(async (o: { file: string; json?: boolean }) => {
    const r = await runTask<{ removed: string[] }>(
      api(),
      '/v1/lab/down',
      readSpec(o.file),
      progress(!!o.json),
    );
    emit(!!o.json, r, () =>
      r.removed.length
        ? `Lab removed (${r.removed.length} namespaces).`
        : 'Nothing to remove: the lab was not up.',
    );
  });

program
  .command('plan')
  .description('validate a spec and show what apply would change')
  .requiredOption('-f, --file <spec>', 'spec file')
  .option('--json', 'machine-readable output')
  .action(async (o: { file: string; json?: boolean }) => {
    const r = await api().post<PlanResult>('/v1/plan', readSpec(o.file));
    emit(!!o.json, r, () => r.text);
  });

program
  .command('apply')
  .description('plan and apply a spec; a repeated apply reports no changes')
  .requiredOption('-f, --file <spec>', 'spec file')
  .option('--json', 'machine-readable output')
  .action(async (o: { file: string; json?: boolean }) => {
    const r = await runTask<PlanResult & { applied: number }>(
      api(),
      '/v1/apply',
      readSpec(o.file),
      progress(!!o.json),
    );
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
    const r = await runTask<PlanResult & { applied: number }>(api(), '/v1/destroy', body, progress(!!o.json));
    emit(!!o.json, r, () => `Destroy complete: ${r.applied} step(s) applied.`);
  });

program
  .command('status')
  .description('hosts of the applied spec, their agents and capabilities')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }) => {
    const r =
      await api().get<Awaited<ReturnType<import('../controller/controller.js').Controller['status']>>>(
        '/v1/status',
      );
    emit(!!o.json, r, () => {
      if (!r.spec) return 'No spec applied yet. Apply one with `vmlink apply -f SPEC`.';
      return [
        `Spec: ${r.spec.source} (applied ${r.spec.appliedAt})`,
        table(
          ['host', 'agent', 'last seen', 'accel', 'cpus', 'memory', 'backends', 'networks', 'vms', 'note'],
          r.hosts.map((h) => [
            h.name,
            h.state === 'unreachable' ? 'UNREACHABLE' : h.reachable ? 'up' : 'UNREACHABLE',
            h.lastSeen ? ago(h.lastSeen) : undefined,
            h.report?.capabilities.accelerator,
            h.report?.capabilities.cpus,
            h.report ? `${h.report.capabilities.memoryMiB} MiB` : undefined,
            h.report?.capabilities.backends?.join(','),
            h.report?.networks.length,
            h.report?.vms.length,
            h.reachable ? h.report?.capabilities.acceleratorReason : h.error?.split('\n')[0],
          ]),
        ),
      ].join('\n');
    });
  });

program
  .command('events')
  .description('recent events: applies, failures, hosts going up and unreachable')
  .option('-n, --limit <n>', 'how many', '50')
  .option('--json', 'machine-readable output')
  .action(async (o: { limit: string; json?: boolean }) => {
    const r = await api().get<Array<{ id: number; time: string; kind: string; message: string }>>(
      `/v1/events?limit=${Number(o.limit)}`,
    );
    emit(!!o.json, r, () =>
      table(
        ['time', 'kind', 'message'],
        r.map((e) => [e.time, e.kind, e.message]),
      ),
    );
  });

program
  .command('verify')
  .description(
    'measure the connectivity matrix (expected vs observed, with RTT); exits non-zero on any mismatch',
  )
  .option('--json', 'machine-readable output')
  .option('--throughput <endpoints...>', 'measure TCP throughput FROM TO with iperf3 instead of the matrix')
  .option('--seconds <n>', 'iperf3 duration in seconds (with --throughput)', '3')
  .action(async (o: { json?: boolean; throughput?: string[]; seconds: string }) => {
    if (o.throughput) {
      if (o.throughput.length !== 2)
        throw new VmlinkError('invalid', '--throughput takes two endpoints: FROM TO');
      const [from, to] = o.throughput;
      const t = await runTask<ThroughputResult>(
        api(),
        '/v1/verify/throughput',
        { from, to, seconds: Number(o.seconds) },
        progress(!!o.json),
      );
      emit(!!o.json, t, () => renderThroughput(t));
      return;
    }
    const r = await runTask<VerifyResult>(api(), '/v1/verify', {}, progress(!!o.json));
    emit(!!o.json, r, () => renderMatrix(r));
    if (!r.ok) process.exitCode = 1;
  });

const network = program.command('network').description('networks');
network
  .command('list')
  .description('networks of the applied spec')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }) => {
    const r =
      await api().get<Array<{ name: string; mode: string; backend: string; hosts: string[] }>>(
        '/v1/networks',
      );
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
    const r = await api().get<NetworkView>(
      `/v1/networks/${encodeURIComponent(name)}?flows=${o.flows ? 'true' : 'false'}`,
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

const vm = program.command('vm').description('virtual machines');
vm.command('list')
  .description('VMs: desired state (spec) and observed state (host)')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }) => {
    const r = await api().get<VmView[]>('/v1/vms');
    emit(!!o.json, r, () =>
      table(
        ['name', 'host', 'state', 'desired', 'cpus', 'memory', 'networks', 'problems'],
        r.map((v) => [
          v.name,
          v.host,
          v.state,
          v.desired,
          v.cpus,
          v.memoryMiB === undefined ? undefined : `${v.memoryMiB} MiB`,
          v.networks.join(','),
          v.problems.join('; ') || undefined,
        ]),
      ),
    );
  });
vm.command('start <name>')
  .description('start a VM')
  .action(async (name: string) => {
    await api().post(`/v1/vms/${encodeURIComponent(name)}/start`, {});
    out(`${name} started`);
  });
vm.command('stop <name>')
  .description('stop a VM: ACPI power-down, then quit after 30 s; --force stops it at once')
  .option('--force', 'stop at once (like pulling the plug)')
  .action(async (name: string, o: { force?: boolean }) => {
    await api().post(`/v1/vms/${encodeURIComponent(name)}/stop`, { force: !!o.force });
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
    const r = await api().post<GuestExecResult>(
      `/v1/vms/${encodeURIComponent(name)}/exec`,
      { argv, timeoutMs },
      timeoutMs + 30_000,
    );
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    process.exitCode = r.exitCode;
  });
vm.command('console <name>')
  .description("show a VM's serial console output")
  .option('-n, --tail <bytes>', 'how much of the end to show', '65536')
  .option('--follow', 'keep printing new output')
  .action(async (name: string, o: { tail: string; follow?: boolean }) => {
    let seen = '';
    for (;;) {
      const r = await api().get<{ log: string }>(
        `/v1/vms/${encodeURIComponent(name)}/console?tail=${Number(o.tail)}`,
      );
      // The log only grows (until the tail window slides), so print what follows the last output.
      const at = seen ? r.log.lastIndexOf(seen.slice(-200)) : -1;
      process.stdout.write(at >= 0 ? r.log.slice(at + Math.min(200, seen.length)) : r.log);
      seen = r.log;
      if (!o.follow) return;
      await new Promise((res) => setTimeout(res, 500));
    }
  });

program
  .command('doctor')
  .description('check prerequisites on this machine and say how to fix what is missing')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }) => {
    const checks = await doctor(new SystemRunner());
    let controller = 'not running';
    try {
      await api().get('/v1/health', 3_000);
      controller = 'running';
    } catch {}
    checks.push({
      name: 'controller',
      ok: true,
      detail: controller === 'running' ? 'running' : 'not running (start: vmlink daemon --detach)',
    });
    const st =
      controller === 'running'
        ? await api()
            .get<{
              hosts: Array<{
                name: string;
                reachable: boolean;
                error?: string;
                report?: {
                  capabilities: {
                    accelerator: string;
                    acceleratorReason: string;
                    network: Record<string, boolean>;
                  };
                };
              }>;
            }>('/v1/status')
            .catch(() => undefined)
        : undefined;
    for (const h of st?.hosts ?? []) {
      checks.push({
        name: `host ${h.name}`,
        ok: h.reachable,
        detail: h.reachable
          ? `agent up; accelerator ${h.report!.capabilities.accelerator}: ${h.report!.capabilities.acceleratorReason}`
          : (h.error ?? 'unreachable'),
        ...(h.reachable ? {} : { fix: 'vmlink lab up -f SPEC restarts lab agents' }),
      });
      if (h.report) {
        const net = h.report.capabilities.network;
        const missing = Object.entries(net)
          .filter(([, v]) => !v)
          .map(([k]) => k);
        checks.push({
          name: `host ${h.name} kernel`,
          ok: true,
          detail: missing.length
            ? `lacks ${missing.join(', ')} (networks needing them are refused)`
            : 'all network features present',
        });
      }
    }
    emit(!!o.json, checks, () =>
      [
        table(
          ['check', 'result', 'detail'],
          checks.map((c) => [
            c.name,
            c.ok ? 'ok' : 'FAIL',
            c.ok ? c.detail : `${c.detail} -> ${c.fix ?? ''}`,
          ]),
        ),
      ].join('\n'),
    );
    if (checks.some((c) => !c.ok)) process.exitCode = 1;
  });

async function stopDaemon(): Promise<void> {
  const { readPid, pidAlive, sleep } = await import('../lab/lab.js');
  const pidfile = `${runDir()}/controller.pid`;
  const pid = readPid(pidfile);
  if (!pid || !pidAlive(pid)) {
    out('controller not running');
    return;
  }
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && pidAlive(pid); i++) await sleep(100);
  if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  const { rmSync } = await import('node:fs');
  rmSync(pidfile, { force: true });
  out(`controller stopped (pid ${pid})`);
}

/** Options of `vmlink daemon`. */
interface DaemonCliOptions {
  db: string;
  listen?: string;
  tokenFile?: string;
  agentTokenFile?: string;
  heartbeatMs: string;
  detach?: boolean;
  stop?: boolean;
}

/** "12 s ago" for an ISO time. */
function ago(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : iso;
}

async function detachDaemon(socket: string, o: DaemonCliOptions): Promise<void> {
  const { HttpClient } = await import('../shared/http/client.js');
  const client = new HttpClient(`unix://${socket}`, { timeoutMs: 2_000 });
  if (
    await client.get('/v1/health').then(
      () => true,
      () => false,
    )
  ) {
    out(`controller already running at ${socket}`);
    return;
  }
  const { mkdirSync } = await import('node:fs');
  mkdirSync(runDir(), { recursive: true });
  const args = [
    fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url)),
    '--socket',
    socket,
    'daemon',
    '--db',
    o.db,
  ];
  if (o.listen) args.push('--listen', o.listen, '--token-file', o.tokenFile!);
  if (o.agentTokenFile) args.push('--agent-token-file', o.agentTokenFile);
  args.push('--heartbeat-ms', o.heartbeatMs);
  const pid = await new SystemRunner().spawnDetached([process.execPath, ...args], {
    logFile: `${runDir()}/controller.log`,
  });
  writeFileSync(`${runDir()}/controller.pid`, `${pid}\n`);
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (
      await client.get('/v1/health').then(
        () => true,
        () => false,
      )
    ) {
      out(`controller started (pid ${pid}, socket ${socket}, log ${runDir()}/controller.log)`);
      return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new VmlinkError(
    'timeout',
    `the controller did not come up within 20 s; see ${runDir()}/controller.log`,
  );
}

try {
  await program.parseAsync(process.argv);
} catch (e) {
  const err = explainUnavailable(e, program.opts<{ socket: string }>().socket);
  const kind = err instanceof VmlinkError ? err.kind : 'internal';
  process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = errorStatus[kind].exit;
}
