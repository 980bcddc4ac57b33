// `vmlink alerts [silence|unsilence|ack]`: the alert rules of the applied spec, their instances, silences and acks.
import type { Command } from 'commander';
import { z } from 'zod';
import { type AlertsView, AlertsViewSchema, SilenceSchema } from '../controller/wire-observe.js';
import { VmlinkError } from '../shared/errors.js';
import { parseDuration } from './host-commands.js';
import { type Api, emit } from './io.js';
import { table } from './render.js';

/** `--label k=v` options as a label map (repeatable). */
export function parseLabels(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const m = /^([a-z_][a-z0-9_]{0,31})=(.{0,128})$/.exec(p);
    if (!m)
      throw new VmlinkError('invalid', `--label must be NAME=VALUE (a label name such as host), got ${p}`);
    out[m[1]!] = m[2]!;
  }
  return out;
}

const collect = (v: string, prev: string[]) => [...prev, v];
const labelsText = (l: Readonly<Record<string, string>>) =>
  Object.entries(l)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(',') || '-';

/** The human rendering of `GET /v1/alerts`. */
export function renderAlerts(v: AlertsView): string {
  const parts: string[] = [];
  if (v.instances.length === 0)
    parts.push(
      `no alerts (${v.rules.length} rule${v.rules.length === 1 ? '' : 's'}${v.evaluatedAt ? `, evaluated ${v.evaluatedAt}` : ', not evaluated yet'})`,
    );
  else
    parts.push(
      table(
        ['RULE', 'STATE', 'SEVERITY', 'LABELS', 'VALUE', 'SINCE', 'NOTE'],
        v.instances.map((i) => [
          i.rule,
          i.state,
          i.severity,
          labelsText(i.labels),
          String(Number(i.value.toPrecision(4))),
          i.state === 'resolved' ? i.resolvedAt : i.state === 'firing' ? i.firedAt : i.activeSince,
          [
            ...(i.silencedBy ? [`silenced (${i.silencedBy})`] : []),
            ...(i.acknowledgedBy ? [`acked by ${i.acknowledgedBy}`] : []),
          ].join(', ') || i.summary,
        ]),
      ),
    );
  if (v.silences.length)
    parts.push(
      `\nsilences:\n${table(
        ['ID', 'RULE', 'LABELS', 'UNTIL', 'BY', 'COMMENT'],
        v.silences.map((s) => [s.id, s.rule, labelsText(s.labels), s.until, s.createdBy, s.comment]),
      )}`,
    );
  return parts.join('\n');
}

/** `vmlink alerts ...`. */
export function addAlertCommands(program: Command, api: Api): void {
  const alerts = program
    .command('alerts')
    .description(
      'alert rules of the applied spec: pending, firing and recently resolved instances, and silences',
    );
  // `vmlink alerts [--json]` runs `list`: an option of `alerts` itself would swallow its subcommands' --json.
  alerts
    .command('list', { isDefault: true })
    .description('pending, firing and recently resolved instances, and live silences')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const v = await api().get('/v1/alerts', AlertsViewSchema);
      emit(!!o.json, v, () => renderAlerts(v));
    });
  alerts
    .command('silence')
    .description("silence RULE's instances (those with every --label) for a while: no action runs for them")
    .argument('<rule>', 'alert rule name')
    .requiredOption('--for <duration>', 'how long, e.g. 30m, 2h, 1d (at most 30d)')
    .option('--label <name=value>', 'only instances with this label (repeatable)', collect, [])
    .option('--comment <text>', 'why (shown with the silence)')
    .option('--json', 'machine-readable output')
    .action(async (rule: string, o: { for: string; label: string[]; comment?: string; json?: boolean }) => {
      const s = await api().post(
        '/v1/alerts/silences',
        {
          rule,
          labels: parseLabels(o.label),
          forSeconds: parseDuration(o.for, '--for'),
          ...(o.comment !== undefined ? { comment: o.comment } : {}),
        },
        SilenceSchema,
      );
      emit(!!o.json, s, () => `silence ${s.id}: ${rule} ${labelsText(s.labels)} until ${s.until}`);
    });
  alerts
    .command('unsilence')
    .description('end a silence')
    .argument('<id>', 'silence id (as `vmlink alerts` lists it)')
    .option('--json', 'machine-readable output')
    .action(async (id: string, o: { json?: boolean }) => {
      const r = await api().delete(
        `/v1/alerts/silences/${encodeURIComponent(id)}`,
        z.object({ deleted: z.boolean() }),
      );
      emit(!!o.json, r, () => `silence ${id} ended`);
    });
  alerts
    .command('ack')
    .description("acknowledge RULE's firing instances (those with every --label) until they resolve")
    .argument('<rule>', 'alert rule name')
    .option('--label <name=value>', 'only instances with this label (repeatable)', collect, [])
    .option('--json', 'machine-readable output')
    .action(async (rule: string, o: { label: string[]; json?: boolean }) => {
      const r = await api().post(
        '/v1/alerts/ack',
        { rule, labels: parseLabels(o.label) },
        z.object({ acknowledged: z.number() }),
      );
      emit(!!o.json, r, () => `${r.acknowledged} firing instance(s) of ${rule} acknowledged`);
    });
}
