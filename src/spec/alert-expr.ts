// The expression language of alert rules (docs/observability.md): a catalog metric with optional label matchers and
// an optional aggregation, `max by (host) (vmlink_vm_cpu_utilization{vm=~"web-.*"})`. Pure: the spec validator
// refuses what does not parse, and the controller's evaluator (controller/alerts/expr.ts) runs what does. It lives
// in spec/ because the spec layer imports nothing of the controller.
import { METRICS, type MetricName } from '../shared/metrics.js';

/** How a matcher compares a label: equal, not equal, matches, does not match (regexes are anchored). */
export type MatchOp = '=' | '!=' | '=~' | '!~';
/** Aggregations an expression may apply. */
export const AGGREGATIONS = ['max', 'min', 'avg', 'sum'] as const;
export type Aggregation = (typeof AGGREGATIONS)[number];

/** One label matcher; `re` is the compiled, anchored regex of `=~` and `!~`. */
export interface LabelMatcher {
  label: string;
  op: MatchOp;
  value: string;
  re?: RegExp;
}

/** A parsed expression. */
export interface AlertExpr {
  metric: MetricName;
  matchers: LabelMatcher[];
  aggregation?: { fn: Aggregation; by: string[] };
  /** The labels every series the expression yields carries (what `{{label}}`, silences and acks may name). */
  labels: readonly string[];
}

/** Most matchers in one expression. */
export const ALERT_MATCHERS_MAX = 16;
/** Longest regex of a matcher. */
export const ALERT_REGEX_MAX = 128;
/** Most repetitions (`*`, `+`, `?`, `{n,m}`) in one regex: each multiplies the work of a failing match. */
export const ALERT_REGEX_REPEATS_MAX = 3;
/** Largest bound of a counted repetition `{n,m}`. */
const REPEAT_BOUND_MAX = 100;

/** An expression that does not parse or names what the catalog lacks; `message` says what and where. */
export class AlertExprError extends Error {}

type Token =
  | { kind: 'ident'; text: string; at: number }
  | { kind: 'string'; text: string; at: number }
  | { kind: 'punct'; text: string; at: number };

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const ident = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i));
    if (ident) {
      out.push({ kind: 'ident', text: ident[0], at: i });
      i += ident[0].length;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === '!=' || two === '=~' || two === '!~') {
      out.push({ kind: 'punct', text: two, at: i });
      i += 2;
      continue;
    }
    if ('{}(),='.includes(c)) {
      out.push({ kind: 'punct', text: c, at: i });
      i++;
      continue;
    }
    if (c === '"' || c === "'") {
      let text = '';
      let j = i + 1;
      for (;;) {
        const d = src[j];
        if (d === undefined) throw new AlertExprError(`unterminated string at ${i + 1}`);
        if (d === c) break;
        if (d === '\\') {
          const e = src[j + 1];
          if (e === undefined) throw new AlertExprError(`unterminated string at ${i + 1}`);
          // `\\` and an escaped quote are unescaped; any other escape (`\.`, `\d`) is kept for the regex.
          text += e === c || e === '\\' ? e : `\\${e}`;
          j += 2;
          continue;
        }
        text += d;
        j++;
      }
      out.push({ kind: 'string', text, at: i });
      i = j + 1;
      continue;
    }
    throw new AlertExprError(`unexpected ${JSON.stringify(c)} at ${i + 1}`);
  }
  return out;
}

/** Why `pattern` is refused as a label regex, or undefined when it is safe to run on untrusted label values. */
export function unsafeRegexReason(pattern: string): string | undefined {
  if (pattern.length > ALERT_REGEX_MAX) return `is longer than ${ALERT_REGEX_MAX} characters`;
  // Per open group: whether it holds a repetition or an alternation (repeating it could take exponential time).
  const groups: Array<{ risky: boolean }> = [];
  let lastGroupRisky: boolean | undefined; // the atom just closed was a group: was it risky?
  let repeats = 0;
  let i = 0;
  const repeat = (): string | undefined => {
    repeats++;
    if (repeats > ALERT_REGEX_REPEATS_MAX) return `has more than ${ALERT_REGEX_REPEATS_MAX} repetitions`;
    if (lastGroupRisky)
      return 'repeats a group that itself repeats or alternates (exponential matching time)';
    const g = groups.at(-1);
    if (g) g.risky = true;
    lastGroupRisky = undefined;
    return undefined;
  };
  while (i < pattern.length) {
    const c = pattern[i]!;
    if (c === '\\') {
      const e = pattern[i + 1];
      if (e !== undefined && /[1-9k]/.test(e)) return 'uses a backreference';
      i += 2;
      lastGroupRisky = undefined;
      continue;
    }
    if (c === '[') {
      let j = i + 1;
      if (pattern[j] === '^') j++;
      if (pattern[j] === ']') j++;
      while (j < pattern.length && pattern[j] !== ']') j += pattern[j] === '\\' ? 2 : 1;
      if (j >= pattern.length) return 'has an unterminated [';
      i = j + 1;
      lastGroupRisky = undefined;
      continue;
    }
    if (c === '(') {
      if (pattern[i + 1] === '?') {
        const kind = pattern.slice(i + 2, i + 4);
        if (kind.startsWith('=') || kind.startsWith('!') || kind === '<=' || kind === '<!')
          return 'uses a lookaround';
      }
      groups.push({ risky: false });
      i++;
      lastGroupRisky = undefined;
      continue;
    }
    if (c === ')') {
      const g = groups.pop();
      if (!g) return 'has an unbalanced )';
      const outer = groups.at(-1);
      if (outer && g.risky) outer.risky = true;
      lastGroupRisky = g.risky;
      i++;
      continue;
    }
    if (c === '|') {
      const g = groups.at(-1);
      if (g) g.risky = true;
      lastGroupRisky = undefined;
      i++;
      continue;
    }
    if (c === '*' || c === '+' || c === '?') {
      const why = repeat();
      if (why) return why;
      i++;
      if (pattern[i] === '?') i++; // lazy
      continue;
    }
    if (c === '{') {
      const m = /^\{(\d{1,4})(,(\d{0,4}))?\}/.exec(pattern.slice(i));
      if (m) {
        const upper = m[2] === undefined ? Number(m[1]) : m[3] ? Number(m[3]) : Number.POSITIVE_INFINITY;
        if (upper > REPEAT_BOUND_MAX) return `repeats more than ${REPEAT_BOUND_MAX} times`;
        const why = repeat();
        if (why) return why;
        i += m[0].length;
        if (pattern[i] === '?') i++;
        continue;
      }
    }
    lastGroupRisky = undefined;
    i++;
  }
  if (groups.length) return 'has an unbalanced (';
  return undefined;
}

/** Compiles a matcher's regex anchored at both ends, or throws naming why it is refused. */
function compileRegex(label: string, pattern: string): RegExp {
  const why = unsafeRegexReason(pattern);
  if (why) throw new AlertExprError(`the regex of label ${label} ${why}`);
  try {
    return new RegExp(`^(?:${pattern})$`);
  } catch (e) {
    throw new AlertExprError(`the regex of label ${label} is invalid: ${(e as Error).message}`);
  }
}

const catalogNames = Object.keys(METRICS) as MetricName[];

/** The catalog name closest to `name` (edit distance), for the error message. */
function closest(name: string): string | undefined {
  const dist = (a: string, b: string) => {
    let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const cur = [i];
      for (let j = 1; j <= b.length; j++)
        cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
    return prev[b.length]!;
  };
  let best: { name: string; d: number } | undefined;
  for (const n of catalogNames) {
    const d = dist(name, n);
    if (!best || d < best.d) best = { name: n, d };
  }
  return best && best.d <= Math.max(3, name.length / 4) ? best.name : undefined;
}

/**
 * Parses an alert rule's `expr` and checks it against the catalog (the metric, its labels, the `by` labels, the
 * regexes); throws `AlertExprError` with a message that names the problem.
 */
export function parseAlertExpr(src: string): AlertExpr {
  const toks = tokenize(src);
  let p = 0;
  const peek = () => toks[p];
  const where = () => (peek() ? `at ${peek()!.at + 1}` : 'at the end');
  const expect = (text: string) => {
    const t = toks[p];
    if (t?.kind !== 'punct' || t.text !== text)
      throw new AlertExprError(`expected ${JSON.stringify(text)} ${where()}`);
    p++;
  };
  const labelList = (): string[] => {
    expect('(');
    const out: string[] = [];
    while (peek()?.kind === 'ident') {
      out.push(toks[p++]!.text);
      if (peek()?.text !== ',') break;
      p++;
    }
    expect(')');
    return out;
  };

  let aggregation: AlertExpr['aggregation'];
  const head = peek();
  const isAgg =
    head?.kind === 'ident' &&
    (AGGREGATIONS as readonly string[]).includes(head.text) &&
    (toks[p + 1]?.text === '(' || toks[p + 1]?.text === 'by');
  if (isAgg) {
    p++;
    let by: string[] | undefined;
    if (peek()?.kind === 'ident' && peek()!.text === 'by') {
      p++;
      by = labelList();
    }
    expect('(');
    aggregation = { fn: head.text as Aggregation, by: by ?? [] };
    const inner = selector();
    expect(')');
    if (peek()?.kind === 'ident' && peek()!.text === 'by') {
      if (by) throw new AlertExprError(`"by" given twice ${where()}`);
      p++;
      aggregation.by = labelList();
    }
    if (p < toks.length) throw new AlertExprError(`unexpected ${JSON.stringify(peek()!.text)} ${where()}`);
    return check(inner.metric, inner.matchers, aggregation);
  }
  const s = selector();
  if (p < toks.length) throw new AlertExprError(`unexpected ${JSON.stringify(peek()!.text)} ${where()}`);
  return check(s.metric, s.matchers, undefined);

  function selector(): { metric: string; matchers: Array<Omit<LabelMatcher, 're'>> } {
    const t = toks[p];
    if (t?.kind !== 'ident') throw new AlertExprError(`expected a metric name ${where()}`);
    p++;
    const matchers: Array<Omit<LabelMatcher, 're'>> = [];
    if (peek()?.text === '{') {
      p++;
      while (peek()?.kind === 'ident') {
        const label = toks[p++]!.text;
        const op = toks[p];
        if (op?.kind !== 'punct' || !['=', '!=', '=~', '!~'].includes(op.text))
          throw new AlertExprError(`expected =, !=, =~ or !~ after label ${label} ${where()}`);
        p++;
        const v = toks[p];
        if (v?.kind !== 'string')
          throw new AlertExprError(`expected a quoted value for label ${label} ${where()}`);
        p++;
        matchers.push({ label, op: op.text as MatchOp, value: v.text });
        if (peek()?.text !== ',') break;
        p++;
      }
      expect('}');
    }
    return { metric: t.text, matchers };
  }
}

function check(
  metric: string,
  raw: Array<Omit<LabelMatcher, 're'>>,
  aggregation: AlertExpr['aggregation'],
): AlertExpr {
  if (!Object.hasOwn(METRICS, metric)) {
    const near = closest(metric);
    throw new AlertExprError(
      `unknown metric ${JSON.stringify(metric)}${near ? ` (did you mean ${near}?)` : ''}: alert rules read the metrics of the catalog (docs/observability.md)`,
    );
  }
  const info = METRICS[metric as MetricName];
  if (info.type === 'histogram')
    throw new AlertExprError(`${metric} is a histogram: alert rules read gauges and counters`);
  const known: readonly string[] = info.labels;
  const labelsText = known.length ? known.join(', ') : 'none';
  if (raw.length > ALERT_MATCHERS_MAX)
    throw new AlertExprError(`more than ${ALERT_MATCHERS_MAX} label matchers`);
  const matchers = raw.map((m): LabelMatcher => {
    if (!known.includes(m.label))
      throw new AlertExprError(`${metric} has no label ${m.label} (its labels: ${labelsText})`);
    if (m.value.length > 128)
      throw new AlertExprError(`the value of label ${m.label} is longer than 128 characters`);
    return m.op === '=~' || m.op === '!~' ? { ...m, re: compileRegex(m.label, m.value) } : { ...m };
  });
  if (aggregation) {
    for (const l of aggregation.by)
      if (!known.includes(l))
        throw new AlertExprError(
          `${aggregation.fn} by (${l}): ${metric} has no label ${l} (its labels: ${labelsText})`,
        );
    return { metric: metric as MetricName, matchers, aggregation, labels: [...new Set(aggregation.by)] };
  }
  return { metric: metric as MetricName, matchers, labels: known };
}

/** Whether a label value passes one matcher. */
export function matches(m: LabelMatcher, value: string): boolean {
  switch (m.op) {
    case '=':
      return value === m.value;
    case '!=':
      return value !== m.value;
    case '=~':
      return m.re!.test(value);
    case '!~':
      return !m.re!.test(value);
  }
}
