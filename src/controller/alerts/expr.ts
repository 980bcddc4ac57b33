// Evaluating a parsed alert expression (spec/alert-expr.ts) over one snapshot of the collector's series: the series of
// the metric that pass every matcher, grouped and reduced when the expression aggregates. Pure.

import type { MetricsSnapshot } from '../../shared/metrics.js';
import { type AlertExpr, matches } from '../../spec/alert-expr.js';
import type { AlertRuleSpec } from '../../spec/schema-observe.js';

/** One series an expression yields: its labels (the instance's identity) and its value. */
export interface ExprResult {
  labels: Record<string, string>;
  value: number;
}

/** The series `expr` yields from `snapshot` (non-finite values are skipped: no data is not a value). */
export function evaluateExpr(expr: AlertExpr, snapshot: MetricsSnapshot): ExprResult[] {
  const picked = snapshot.series.filter(
    (s) =>
      s.name === expr.metric &&
      Number.isFinite(s.value) &&
      expr.matchers.every((m) => matches(m, s.labels[m.label] ?? '')),
  );
  const agg = expr.aggregation;
  if (!agg) return picked.map((s) => ({ labels: { ...s.labels }, value: s.value }));
  const groups = new Map<string, { labels: Record<string, string>; values: number[] }>();
  for (const s of picked) {
    // A series without a `by` label groups under no value for it (and its result lacks that label).
    const labels: Record<string, string> = {};
    for (const l of agg.by) if (s.labels[l]) labels[l] = s.labels[l];
    const key = JSON.stringify(agg.by.map((l) => labels[l] ?? ''));
    const g = groups.get(key) ?? { labels, values: [] };
    g.values.push(s.value);
    groups.set(key, g);
  }
  return [...groups.values()].map(({ labels, values }) => ({ labels, value: reduce(agg.fn, values) }));
}

function reduce(fn: NonNullable<AlertExpr['aggregation']>['fn'], values: number[]): number {
  switch (fn) {
    case 'max':
      return Math.max(...values);
    case 'min':
      return Math.min(...values);
    case 'sum':
      return values.reduce((a, b) => a + b, 0);
    case 'avg':
      return values.reduce((a, b) => a + b, 0) / values.length;
  }
}

/** Whether `value op threshold` holds. */
export function conditionHolds(op: AlertRuleSpec['op'], value: number, threshold: number): boolean {
  switch (op) {
    case '>':
      return value > threshold;
    case '>=':
      return value >= threshold;
    case '<':
      return value < threshold;
    case '<=':
      return value <= threshold;
  }
}

/** A value as people read it: at most 4 significant digits. */
export const formatValue = (v: number): string => String(Number(v.toPrecision(4)));

/**
 * The one-line summary of an instance: the rule's `summary` with `{{label}}` and `{{value}}` replaced, or by default
 * `rule{labels}: value > threshold`.
 */
export function renderSummary(
  rule: AlertRuleSpec,
  labels: Readonly<Record<string, string>>,
  value: number,
): string {
  if (rule.summary !== undefined)
    return rule.summary.replace(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g, (whole, name: string) =>
      name === 'value'
        ? formatValue(value)
        : name === 'threshold'
          ? formatValue(rule.threshold)
          : (labels[name] ?? whole),
    );
  return `${rule.name}${labelText(labels)}: ${formatValue(value)} ${rule.op} ${formatValue(rule.threshold)}`;
}

/** `{host="h1",vm="web"}`, or nothing without labels. */
export function labelText(labels: Readonly<Record<string, string>>): string {
  const keys = Object.keys(labels).sort();
  return keys.length ? `{${keys.map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}` : '';
}
