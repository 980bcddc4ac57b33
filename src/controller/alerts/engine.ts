// The alert engine (docs/observability.md): after each collection it evaluates every rule of the applied spec over the
// collector's snapshot and moves each instance (a rule and the labels of one series) through
// inactive -> pending -> firing -> resolved. Transitions are stored before anything acts on them (at most one run of
// a transition's actions, even across a restart or a new active controller), recorded as events, and then acted on
// unless a silence covers the instance. Time comes from the injected clock.
import { randomUUID } from 'node:crypto';
import { InvalidRequestError, NotFoundError, VmlinkError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { log as defaultLog } from '../../shared/log.js';
import type { MetricsSnapshot } from '../../shared/metrics.js';
import { SerialQueue } from '../../shared/queue.js';
import { type AlertExpr, parseAlertExpr } from '../../spec/alert-expr.js';
import { type AlertRuleSpec, parseDuration } from '../../spec/schema-observe.js';
import type { Store } from '../store/types.js';
import type {
  AckRequest,
  AlertInstance,
  AlertState,
  AlertsView,
  Silence,
  SilenceRequest,
} from '../wire-observe.js';
import { type ActionDeps, type AlertNotice, runAction } from './actions.js';
import { conditionHolds, evaluateExpr, formatValue, labelText, renderSummary } from './expr.js';
import { type AlertRecord, AlertRecords, instanceKey, silenceCovers } from './records.js';

/** How long a resolved instance stays listed (and stored). */
export const RESOLVED_KEEP_MS = 3600_000;

/** Alert instances of one rule in one state (the `vmlink_alerts` gauge). */
export interface AlertCount {
  rule: string;
  state: AlertState;
  severity: string;
  count: number;
}

/** What the engine is wired to. */
export interface AlertEngineDeps {
  store: Store;
  /** The rules of the applied spec. */
  rules(): Promise<readonly AlertRuleSpec[]>;
  /** Epoch ms (tests drive `for` with a fake clock). */
  now?: () => number;
  /** How actions reach the world (webhook timing, the volume resize path). */
  actions?: Omit<ActionDeps, 'store'>;
  /** Called after each evaluation with the instances by rule, state and severity. */
  onCounts?: (counts: AlertCount[]) => void;
  log?: Logger;
}

/** One transition of one instance. */
export interface AlertTransition {
  rule: string;
  labels: Record<string, string>;
  state: AlertState | 'inactive';
  silencedBy?: string;
}

/** Evaluates alert rules, keeps their instances, silences and acknowledgements. */
export class AlertEngine {
  private readonly records: AlertRecords;
  private readonly now: () => number;
  private readonly log: Logger;
  /** Instances by store key; loaded from the store at first use (and again after `reset`). */
  private cache: Map<string, AlertRecord> | undefined;
  private readonly exprs = new Map<string, AlertExpr | undefined>();
  private readonly queue = new SerialQueue();
  private readonly running = new Set<Promise<void>>();
  private evaluatedAt: number | undefined;
  private idle: (() => void) | undefined;

  constructor(private readonly deps: AlertEngineDeps) {
    this.records = new AlertRecords(deps.store);
    this.now = deps.now ?? Date.now;
    this.log = deps.log ?? defaultLog;
  }

  /** Sets the check a `scale` action makes before it resizes (throws while an apply or host change runs). */
  guard(assertIdle: () => void): void {
    this.idle = assertIdle;
  }

  /** Forgets what it holds in memory: the store is read again at the next use (a new term as active controller). */
  reset(): void {
    this.cache = undefined;
  }

  /** Waits for the actions started so far (tests; a clean stop). */
  async drain(): Promise<void> {
    while (this.running.size) await Promise.allSettled([...this.running]);
  }

  /** Evaluates every rule over `snapshot`; returns the transitions it made (their actions run in the background). */
  evaluate(snapshot: MetricsSnapshot): Promise<AlertTransition[]> {
    return this.queue.run(() => this.evaluateNow(snapshot));
  }

  private async instances(): Promise<Map<string, AlertRecord>> {
    this.cache ??= await this.records.instances();
    return this.cache;
  }

  private parsed(rule: AlertRuleSpec): AlertExpr | undefined {
    if (!this.exprs.has(rule.expr)) {
      try {
        this.exprs.set(rule.expr, parseAlertExpr(rule.expr));
      } catch (e) {
        // The spec validator refuses these; one stored before a catalog change is skipped, not fatal.
        this.log.warn({ rule: rule.name, err: (e as Error).message }, 'alert rule skipped');
        this.exprs.set(rule.expr, undefined);
      }
    }
    return this.exprs.get(rule.expr);
  }

  private async evaluateNow(snapshot: MetricsSnapshot): Promise<AlertTransition[]> {
    const now = this.now();
    const iso = new Date(now).toISOString();
    const rules = await this.deps.rules();
    const cache = await this.instances();
    const silences = (await this.records.silences()).filter((s) => Date.parse(s.until) > now);
    const transitions: Array<{ key: string; rec: AlertRecord; rule?: AlertRuleSpec }> = [];
    const removed: Array<{ key: string; rec: AlertRecord }> = [];
    const seen = new Set<string>();

    for (const rule of rules) {
      const expr = this.parsed(rule);
      if (!expr) continue;
      const forMs = parseDuration(rule.for);
      for (const r of evaluateExpr(expr, snapshot)) {
        if (!conditionHolds(rule.op, r.value, rule.threshold)) continue;
        const key = instanceKey(rule.name, r.labels);
        seen.add(key);
        const prev = cache.get(key);
        const summary = renderSummary(rule, r.labels, r.value);
        const base = { severity: rule.severity, value: r.value, summary };
        if (!prev || prev.state === 'resolved') {
          const firing = forMs === 0;
          const rec: AlertRecord = {
            rule: rule.name,
            labels: r.labels,
            state: firing ? 'firing' : 'pending',
            ...base,
            activeSince: iso,
            ...(firing ? { firedAt: iso } : {}),
          };
          cache.set(key, rec);
          transitions.push({ key, rec, rule });
        } else if (prev.state === 'pending' && now - Date.parse(prev.activeSince) >= forMs) {
          const rec: AlertRecord = { ...prev, ...base, state: 'firing', firedAt: iso };
          cache.set(key, rec);
          transitions.push({ key, rec, rule });
        } else {
          cache.set(key, { ...prev, ...base });
        }
      }
    }

    const byName = new Map(rules.map((r) => [r.name, r] as const));
    for (const [key, rec] of cache) {
      if (seen.has(key)) continue;
      if (rec.state === 'pending') {
        cache.delete(key);
        removed.push({ key, rec });
      } else if (rec.state === 'firing') {
        const { acknowledgedBy: _ended, ...rest } = rec;
        const next: AlertRecord = { ...rest, state: 'resolved', resolvedAt: iso };
        cache.set(key, next);
        const rule = byName.get(rec.rule);
        transitions.push({ key, rec: next, ...(rule ? { rule } : {}) });
      } else if (now - Date.parse(rec.resolvedAt ?? rec.activeSince) >= RESOLVED_KEEP_MS) {
        cache.delete(key);
        await this.records.deleteInstance(key);
      }
    }

    const out: AlertTransition[] = [];
    for (const { key, rec } of removed) {
      await this.records.deleteInstance(key);
      out.push({ rule: rec.rule, labels: rec.labels, state: 'inactive' });
    }
    for (const { key, rec, rule } of transitions) {
      // Stored first: a crash after this never runs the same transition's actions twice.
      await this.records.putInstance(key, rec);
      const silence = silences.find((s) => silenceCovers(s, rec.rule, rec.labels, now));
      await this.deps.store.appendEvent(
        `alert.${rec.state}`,
        `${rec.rule}${labelText(rec.labels)} ${rec.state} (${rec.severity}): ${rec.summary}${rule ? '' : ' (rule removed from the spec)'}${silence ? ` [silenced by ${silence.id}: no actions]` : ''}`,
      );
      out.push({
        rule: rec.rule,
        labels: rec.labels,
        state: rec.state,
        ...(silence ? { silencedBy: silence.id } : {}),
      });
      if (!silence && rule && rec.state !== 'pending') this.act(rule, rec);
    }
    this.evaluatedAt = now;
    this.deps.onCounts?.(this.counts(cache));
    return out;
  }

  /** Starts the rule's actions for a firing (all) or resolved (webhooks) instance, in the background. */
  private act(rule: AlertRuleSpec, rec: AlertRecord): void {
    const notice: AlertNotice = {
      rule: rec.rule,
      state: rec.state as 'firing' | 'resolved',
      severity: rec.severity,
      labels: rec.labels,
      value: rec.value,
      summary: rec.summary,
      startsAt: rec.activeSince,
      ...(rec.resolvedAt ? { endsAt: rec.resolvedAt } : {}),
    };
    const deps: ActionDeps = {
      ...this.deps.actions,
      ...(this.idle ? { assertIdle: this.idle } : {}),
      store: this.deps.store,
      log: this.log,
    };
    for (const action of rule.actions) {
      if (rec.state === 'resolved' && action.type !== 'webhook') continue;
      const p = runAction(action, notice, deps).finally(() => this.running.delete(p));
      this.running.add(p);
    }
  }

  /** Instances by rule, state and severity, as of the last evaluation (the `vmlink_alerts` gauge). */
  counts(cache = this.cache ?? new Map<string, AlertRecord>()): AlertCount[] {
    const by = new Map<string, AlertCount>();
    for (const r of cache.values()) {
      const k = `${r.rule}\0${r.state}\0${r.severity}`;
      const c = by.get(k) ?? { rule: r.rule, state: r.state, severity: r.severity, count: 0 };
      c.count++;
      by.set(k, c);
    }
    return [...by.values()];
  }

  /** `GET /v1/alerts`: the rules, the instances (resolved ones for an hour) and the live silences. */
  async view(): Promise<AlertsView> {
    const now = this.now();
    const rules = await this.deps.rules();
    const silences = (await this.records.silences()).filter((s) => Date.parse(s.until) > now);
    const cache = this.cache ?? (await this.records.instances());
    const instances: AlertInstance[] = [...cache.values()]
      .filter(
        (r) => r.state !== 'resolved' || now - Date.parse(r.resolvedAt ?? r.activeSince) < RESOLVED_KEEP_MS,
      )
      .map((r) => {
        const s = silences.find((x) => silenceCovers(x, r.rule, r.labels, now));
        return { ...r, ...(s ? { silencedBy: s.id } : {}) };
      })
      .sort((a, b) => a.rule.localeCompare(b.rule) || labelText(a.labels).localeCompare(labelText(b.labels)));
    return {
      rules: rules.map((r) => ({
        name: r.name,
        expr: r.expr,
        op: r.op,
        threshold: r.threshold,
        for: r.for,
        severity: r.severity,
      })),
      instances,
      silences,
      ...(this.evaluatedAt !== undefined ? { evaluatedAt: new Date(this.evaluatedAt).toISOString() } : {}),
    };
  }

  /** Silences a rule's instances (those whose labels equal `req.labels`) for `req.forSeconds`. */
  silence(req: SilenceRequest, by: string): Promise<Silence> {
    return this.queue.run(async () => {
      const rule = await this.ruleOf(req.rule);
      this.checkLabels(rule, req.labels);
      const s: Silence = {
        id: randomUUID(),
        rule: req.rule,
        labels: req.labels,
        until: new Date(this.now() + req.forSeconds * 1000).toISOString(),
        createdBy: by.slice(0, 128),
        ...(req.comment !== undefined ? { comment: req.comment } : {}),
      };
      await this.records.putSilence(s);
      // Expired silences go when a new one is made: the list stays as short as the live ones.
      const now = this.now();
      for (const old of await this.records.silences())
        if (Date.parse(old.until) <= now) await this.records.deleteSilence(old.id);
      await this.deps.store.appendEvent(
        'alert.silenced',
        `${req.rule}${labelText(req.labels)} silenced until ${s.until} by ${s.createdBy} (silence ${s.id})${req.comment ? `: ${req.comment}` : ''}`,
      );
      return s;
    });
  }

  /** Removes a silence. */
  unsilence(id: string, by: string): Promise<void> {
    return this.queue.run(async () => {
      if (!(await this.records.hasSilence(id))) throw new NotFoundError('silence', id);
      await this.records.deleteSilence(id);
      await this.deps.store.appendEvent('alert.unsilenced', `silence ${id} removed by ${by}`);
    });
  }

  /** Acknowledges the firing instances of a rule whose labels equal `req.labels`; returns how many. */
  ack(req: AckRequest, by: string): Promise<number> {
    return this.queue.run(async () => {
      const rule = await this.ruleOf(req.rule);
      this.checkLabels(rule, req.labels);
      const cache = await this.instances();
      let n = 0;
      for (const [key, rec] of cache) {
        if (rec.rule !== req.rule || rec.state !== 'firing' || rec.acknowledgedBy !== undefined) continue;
        if (!Object.entries(req.labels).every(([k, v]) => rec.labels[k] === v)) continue;
        const next = { ...rec, acknowledgedBy: by.slice(0, 128) };
        await this.records.putInstance(key, next);
        cache.set(key, next);
        n++;
        await this.deps.store.appendEvent(
          'alert.acknowledged',
          `${rec.rule}${labelText(rec.labels)} acknowledged by ${next.acknowledgedBy} (value ${formatValue(rec.value)})`,
        );
      }
      return n;
    });
  }

  private async ruleOf(name: string): Promise<AlertRuleSpec> {
    const rules = await this.deps.rules();
    const rule = rules.find((r) => r.name === name);
    if (!rule)
      throw new VmlinkError(
        'not-found',
        `alert rule ${JSON.stringify(name)} is not in the applied spec (its rules: ${rules.map((r) => r.name).join(', ') || 'none'})`,
        { subject: `alert/${name}` },
      );
    return rule;
  }

  /** Refuses labels the rule's instances never carry (a silence or ack that could match nothing). */
  private checkLabels(rule: AlertRuleSpec, labels: Readonly<Record<string, string>>): void {
    const expr = this.parsed(rule);
    const known = expr?.labels ?? [];
    const bad = Object.keys(labels).filter((l) => !known.includes(l));
    if (bad.length)
      throw new InvalidRequestError(
        `alert rule ${rule.name}'s instances have no label ${bad.join(', ')} (their labels: ${known.join(', ') || 'none'})`,
        `alert/${rule.name}`,
      );
  }
}
