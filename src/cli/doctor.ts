// `vmlink doctor`: turns what the controller reports (its own checks, each agent's, each host's capabilities) and,
// where no agent can be asked, this machine's own checks into one list of checks with fixes.
import type { Command } from 'commander';
import {
  type DoctorCheck,
  type DoctorReport,
  DoctorReportSchema,
  HealthSchema,
  type Status,
  StatusSchema,
} from '../controller/wire.js';
import type { Diagnosis } from '../controller/wire-observe.js';
import { type Api, emit } from './io.js';
import { table } from './render.js';

/** What `doctor` gathered: whether a controller answered, its report and status, and this machine's own checks. */
export interface DoctorInput {
  running: boolean;
  report?: DoctorReport;
  status?: Status;
  local: DoctorCheck[];
}

/** One list of checks: this machine's, the controller's, then per host its agent, capabilities and prerequisites. */
export function renderDoctor(d: DoctorInput): DoctorCheck[] {
  const checks: DoctorCheck[] = [...d.local];
  checks.push({
    name: 'controller',
    ok: true,
    detail: d.running ? 'running' : 'not running (start: vmlink daemon --detach)',
  });
  checks.push(...(d.report?.controller ?? []));
  for (const h of d.report?.hosts ?? []) {
    const st = d.status?.hosts.find((x) => x.name === h.host);
    const caps = st?.report?.capabilities;
    checks.push({
      name: `host ${h.host}`,
      ok: h.reachable,
      detail: h.reachable
        ? `agent up${caps ? `; accelerator ${caps.accelerator}: ${caps.acceleratorReason}` : ''}`
        : (h.error?.split('\n')[0] ?? 'unreachable'),
      ...(h.reachable ? {} : { fix: 'vmlink lab up -f SPEC restarts lab agents' }),
    });
    if (caps) {
      const missing = Object.entries(caps.network)
        .filter(([, v]) => !v)
        .map(([k]) => k);
      checks.push({
        name: `host ${h.host} kernel`,
        ok: true,
        detail: missing.length
          ? `lacks ${missing.join(', ')} (networks needing them are refused)`
          : 'all network features present',
      });
    }
    if (caps?.confidential) {
      const c = caps.confidential;
      const kinds = (['sev', 'sev-snp', 'tdx'] as const).map(
        (k) => `${k} ${c[k].available ? 'yes' : `no (${c[k].reason})`}`,
      );
      checks.push({ name: `host ${h.host} confidential VMs`, ok: true, detail: kinds.join('; ') });
    }
    // A host's passing prerequisites make one line; each failing one is shown with its fix.
    const failed = h.checks.filter((c) => !c.ok);
    if (h.checks.length && !failed.length)
      checks.push({
        name: `host ${h.host} prerequisites`,
        ok: true,
        detail: `all ${h.checks.length} present`,
      });
    for (const c of failed) checks.push({ ...c, name: `host ${h.host} ${c.name}` });
  }
  checks.push(...(d.report?.storage ?? []));
  return checks;
}

/** The diagnoses as text: per diagnosis its summary, the evidence it rests on, and the fix. */
export function renderDiagnoses(diagnoses: readonly Diagnosis[]): string {
  if (!diagnoses.length) return 'diagnoses: none (no known failure found)';
  return [
    `diagnoses: ${diagnoses.length}`,
    ...diagnoses.map((d) =>
      [
        `${d.severity.toUpperCase()} ${d.id}${d.host ? ` on ${d.host}` : ''}: ${d.object}`,
        `  ${d.summary}`,
        ...d.evidence.map((e) => `  evidence: ${e}`),
        `  fix: ${d.fix}`,
      ].join('\n'),
    ),
  ].join('\n\n');
}

/** `vmlink doctor`: asks the controller; `localChecks` (this machine) stands in where no agent can be asked. */
export function addDoctorCommand(
  program: Command,
  api: Api,
  localChecks: () => Promise<DoctorCheck[]>,
): void {
  program
    .command('doctor')
    .description(
      'check prerequisites, diagnose known failures (STP, VLAN trunks, overlay MTU, storage paths, memory growth, kernel features, agents, clocks) and say how to fix them',
    )
    .option('--host <host>', 'only this host (its checks and diagnoses)')
    .option('--json', 'machine-readable output: {checks, diagnoses}')
    .action(async (o: { json?: boolean; host?: string }) => {
      const running = await api()
        .get('/v1/health', HealthSchema, 3_000)
        .then(
          () => true,
          () => false,
        );
      const query = o.host ? `?host=${encodeURIComponent(o.host)}` : '';
      const report = running ? await api().get(`/v1/doctor${query}`, DoctorReportSchema) : undefined;
      const status = running
        ? await api()
            .get('/v1/status', StatusSchema)
            .catch(() => undefined)
        : undefined;
      // With no agent to ask (no controller, or no spec applied), this machine's own checks are the useful ones.
      const local = report?.hosts.length || o.host ? [] : await localChecks();
      const checks = renderDoctor({
        running,
        local,
        ...(report ? { report } : {}),
        ...(status ? { status } : {}),
      });
      const diagnoses = report?.diagnoses ?? [];
      emit(
        !!o.json,
        { checks, diagnoses },
        () =>
          `${table(
            ['check', 'result', 'detail'],
            checks.map((c) => [
              c.name,
              c.ok ? 'ok' : 'FAIL',
              c.ok ? c.detail : `${c.detail} -> ${c.fix ?? ''}`,
            ]),
          )}\n\n${renderDiagnoses(diagnoses)}`,
      );
      if (checks.some((c) => !c.ok) || diagnoses.some((d) => d.severity === 'critical')) process.exitCode = 1;
    });
}
