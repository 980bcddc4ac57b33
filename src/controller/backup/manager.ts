// The backup manager: on the active controller only (an ActiveService), every BACKUP_MANAGER_TICK_MS it runs the
// policies whose schedule is due (their state in the store, `backup/schedules/<policy>`, so a restart or a takeover
// neither loses a due run nor repeats one), the restore tests that are due, and evaluates every objective, writing
// `backup.objective-drift` / `backup.objective-ok` when one changes (the last states are kept in the store too).
// One run at a time per VM: a VM busy with a run the API started is skipped this round and taken at the next.
import { BACKUP_MANAGER_TICK_MS, type ObjectiveStatus } from '../../shared/backup.js';
import { log } from '../../shared/log.js';
import type { BackupPolicySpec } from '../../spec/schema-backup.js';
import type { ActiveService } from '../cluster/types.js';
import type { TaskContext } from '../tasks.js';
import { type BackupControl, gatherStores, objectivesOf } from './control.js';
import { type ObjectiveStates, objectiveKey, type ScheduleState, scheduleKey } from './records.js';
import { isDue } from './schedule.js';

/** Options of the manager (tests: no timer, a fake clock through the deps). */
export interface BackupManagerOptions {
  tickMs?: number;
  /** Each evaluation of every (policy, VM)'s objectives, and when (the metrics' objective gauges). */
  onEvaluated?: (objectives: readonly ObjectiveStatus[], at: Date) => void;
}

/** See the file's head. */
export class BackupManager implements ActiveService {
  readonly name = 'backup-manager';
  private timer: NodeJS.Timeout | undefined;
  private abort = new AbortController();
  private ticking: Promise<void> | undefined;
  /** Policies whose run (or restore test) is under way, and the promises of those. */
  private readonly runs = new Map<string, Promise<void>>();

  constructor(
    private readonly control: BackupControl,
    private readonly opts: BackupManagerOptions = {},
  ) {}

  start(): void {
    this.abort = new AbortController();
    this.timer = setInterval(() => void this.tick(), this.opts.tickMs ?? BACKUP_MANAGER_TICK_MS);
    void this.tick();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.settled();
    // A stopped manager (a standby now) vouches for no objective.
    this.opts.onEvaluated?.([], this.d.now());
  }

  /** Resolves when the round and every run it started have ended (tests, stop). */
  async settled(): Promise<void> {
    while (this.ticking || this.runs.size) {
      await this.ticking;
      await Promise.all([...this.runs.values()]);
    }
  }

  /** One round: start due runs and tests (in the background), then evaluate the objectives. */
  tick(): Promise<void> {
    if (this.ticking || this.abort.signal.aborted) return this.ticking ?? Promise.resolve();
    this.ticking = this.round()
      .catch((e: unknown) => {
        if (!this.abort.signal.aborted)
          log.warn({ err: (e as Error).message }, 'backup manager round failed');
      })
      .finally(() => {
        this.ticking = undefined;
      });
    return this.ticking;
  }

  private get d() {
    return this.control.d;
  }

  private async round(): Promise<void> {
    const spec = await this.d.spec();
    if (!spec?.backups.length) return;
    const now = this.d.now();
    for (const p of spec.backups) {
      const state = (await this.d.store.get<ScheduleState>(scheduleKey(p.name))) ?? {};
      const last = state.lastRunAt ? new Date(state.lastRunAt) : undefined;
      if (!this.runs.has(p.name) && isDue(p.schedule, last, now))
        this.launch(p.name, () => this.runPolicy(p, now));
      const lastTest = state.lastRestoreTestAt ? new Date(state.lastRestoreTestAt) : undefined;
      const testKey = `${p.name} restore-test`;
      // A restore test waits for the policy's first good run (its state says so) and never overlaps its run.
      if (
        p.restoreTest &&
        state.lastOutcome &&
        !this.runs.has(testKey) &&
        !this.runs.has(p.name) &&
        isDue(p.restoreTest.schedule, lastTest, now)
      )
        this.launch(testKey, () => this.testPolicy(p, now));
    }
    await this.evaluate();
  }

  private launch(key: string, f: () => Promise<void>): void {
    const run = f()
      .catch((e: unknown) => {
        if (!this.abort.signal.aborted)
          log.warn({ run: key, err: (e as Error).message }, 'backup manager: run failed');
      })
      .finally(() => this.runs.delete(key));
    this.runs.set(key, run);
  }

  private ctx(what: string): TaskContext {
    return {
      progress: (m) => log.info({ backup: what }, m),
      signal: this.abort.signal,
    };
  }

  /** Backs up each VM of `p`, then records the run (not when this controller stopped being active meanwhile). */
  private async runPolicy(p: BackupPolicySpec, startedAt: Date): Promise<void> {
    const failures: string[] = [];
    for (const vm of p.vms) {
      if (this.abort.signal.aborted) return;
      if (this.d.locks.busy(vm)) {
        failures.push(`vm ${vm}: busy (another backup or restore of it runs)`);
        continue;
      }
      try {
        await this.control.run({ vm, policy: p.name }, this.ctx(`${p.name}/${vm}`));
      } catch (e) {
        failures.push(`vm ${vm}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    if (this.abort.signal.aborted) return;
    const state = (await this.d.store.get<ScheduleState>(scheduleKey(p.name))) ?? {};
    await this.d.store.put(scheduleKey(p.name), {
      ...state,
      lastRunAt: startedAt.toISOString(),
      lastOutcome: failures.length ? 'failed' : 'succeeded',
      ...(failures.length ? { lastError: failures.join('; ') } : { lastError: undefined }),
    } satisfies ScheduleState);
    await this.evaluate();
  }

  private async testPolicy(p: BackupPolicySpec, startedAt: Date): Promise<void> {
    await this.control.restoreTest(p.name, undefined, this.ctx(`${p.name} restore test`));
    if (this.abort.signal.aborted) return;
    const state = (await this.d.store.get<ScheduleState>(scheduleKey(p.name))) ?? {};
    await this.d.store.put(scheduleKey(p.name), { ...state, lastRestoreTestAt: startedAt.toISOString() });
    await this.evaluate();
  }

  /** Evaluates every objective; a change of one (policy, VM)'s overall state to drift, or back to ok, is an event. */
  async evaluate(): Promise<void> {
    const spec = await this.d.spec();
    if (this.abort.signal.aborted) return;
    if (!spec?.backups.length) {
      this.opts.onEvaluated?.([], this.d.now());
      return;
    }
    const objectives = await objectivesOf(this.d, spec, await gatherStores(this.d, spec));
    if (!this.abort.signal.aborted) this.opts.onEvaluated?.(objectives, this.d.now());
    for (const o of objectives) {
      const states: ObjectiveStates = {
        rpo: o.rpo.state,
        rto: o.rto.state,
        rule: o.rule.state,
        overall: [o.rpo.state, o.rto.state, o.rule.state].includes('drift')
          ? 'drift'
          : [o.rpo.state, o.rto.state, o.rule.state].includes('ok')
            ? 'ok'
            : 'unknown',
      };
      const key = objectiveKey(o.policy, o.vm);
      const before = await this.d.store.get<ObjectiveStates>(key);
      if (
        before?.overall === states.overall &&
        before.rpo === states.rpo &&
        before.rto === states.rto &&
        before.rule === states.rule
      )
        continue;
      if (this.abort.signal.aborted) return;
      await this.d.store.put(key, states);
      const drifted = (['rpo', 'rto', 'rule'] as const).filter((k) => states[k] === 'drift');
      if (drifted.length && drifted.some((k) => before?.[k] !== 'drift'))
        await this.d.store.appendEvent(
          'backup.objective-drift',
          `policy ${o.policy} vm ${o.vm}: ${drifted.map((k) => (k === 'rule' ? o.rule.rule : k.toUpperCase())).join(', ')} in drift: ${o.problems.join('; ')}`.slice(
            0,
            2000,
          ),
        );
      else if (states.overall === 'ok' && before?.overall === 'drift')
        await this.d.store.appendEvent(
          'backup.objective-ok',
          `policy ${o.policy} vm ${o.vm}: every objective met again`,
        );
    }
  }
}
