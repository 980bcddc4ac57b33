// The controller's backup facade for the API and the manager: runs, lists, verify, sync, prune, status with objectives,
// keys, restores and restore tests, all through the hosts' agents (the controller runs no host command itself).
import type { ObjectiveStatus, SnapshotSummary, VerifyResult } from '../../shared/backup.js';
import { BadResponseError } from '../../shared/errors.js';
import type { Spec } from '../../spec/schema.js';
import type { BackupStoreSpec } from '../../spec/schema-backup.js';
import type { TaskContext } from '../tasks.js';
import type {
  BackupList,
  BackupPruneResult,
  BackupStatus,
  RestoreBody,
  RestoreResult,
  RestoreTestResult,
} from '../wire-backup.js';
import { assertHostUp, backupAgent, pollJob, storeConfig, storeSpec } from './agents.js';
import { appliedSpec, type BackupDeps, policyOf } from './deps.js';
import { evaluateObjectives } from './objectives.js';
import { type RtoRecord, restoredVms, rtoKey, type ScheduleState, scheduleKey } from './records.js';
import { discardRestored, restore } from './restore.js';
import { restoreTest } from './restore-test.js';
import { collectGarbage, type RunRequest, retainPolicy, runBackup, syncStore } from './runs.js';
import { nextDue } from './schedule.js';

/** A store of the spec with what its host answered now (snapshots of every VM, its status), or why not. */
export interface StoreView {
  spec: BackupStoreSpec;
  snapshots?: SnapshotSummary[];
  status?: { snapshots: number; storedBytes: number; freeBytes: number };
  unreachable?: string;
}

/** Asks every store of `spec` (or those named) for its snapshots and status, in parallel; a down host is named. */
export async function gatherStores(
  d: BackupDeps,
  spec: Spec,
  names?: string[],
  vm?: string,
): Promise<StoreView[]> {
  const stores = spec.backupStores.filter((s) => !names || names.includes(s.name));
  return Promise.all(
    stores.map(async (s): Promise<StoreView> => {
      try {
        await assertHostUp(d.store, d.hosts, s.host, `store ${s.name}`);
        const agent = backupAgent(d.agents, spec, s.host);
        const [snapshots, statuses] = await Promise.all([agent.snapshots(s.name, vm), agent.backupStores()]);
        const st = statuses.find((x) => x.name === s.name);
        return {
          spec: s,
          snapshots,
          ...(st
            ? { status: { snapshots: st.snapshots, storedBytes: st.storedBytes, freeBytes: st.freeBytes } }
            : {}),
        };
      } catch (e) {
        return { spec: s, unreachable: (e as Error).message.split('\n')[0] ?? 'unreachable' };
      }
    }),
  );
}

/** Every (policy, VM) objective of `spec` from `stores` and the recorded restore tests. */
export async function objectivesOf(
  d: BackupDeps,
  spec: Spec,
  stores: StoreView[],
): Promise<ObjectiveStatus[]> {
  const now = d.now();
  const inputs = stores.map((s) => ({
    name: s.spec.name,
    host: s.spec.host,
    offsite: s.spec.offsite,
    ...(s.spec.pullFrom ? { pullFrom: s.spec.pullFrom } : {}),
    ...(s.snapshots ? { snapshots: s.snapshots } : {}),
    ...(s.unreachable ? { unreachable: s.unreachable } : {}),
  }));
  const out: ObjectiveStatus[] = [];
  for (const p of spec.backups)
    for (const vm of p.vms) {
      const rto = await d.store.get<RtoRecord>(rtoKey(p.name, vm));
      const vmHost = (await d.ownerHost?.(vm)) ?? spec.vms.find((v) => v.name === vm)?.host;
      out.push(
        evaluateObjectives({
          policy: {
            name: p.name,
            store: p.store,
            ...(p.rpoMinutes ? { rpoMinutes: p.rpoMinutes } : {}),
            ...(p.rtoMinutes ? { rtoMinutes: p.rtoMinutes } : {}),
            rule: p.rule,
          },
          vm,
          ...(vmHost ? { vmHost } : {}),
          stores: inputs,
          ...(rto
            ? {
                lastRestoreTest: {
                  at: new Date(rto.at),
                  ok: rto.ok,
                  ...(rto.seconds !== undefined ? { seconds: rto.seconds } : {}),
                  ...(rto.error ? { error: rto.error } : {}),
                },
              }
            : {}),
          now,
        }),
      );
    }
  return out;
}

/** Backups as the API serves them. */
export class BackupControl {
  constructor(readonly d: BackupDeps) {}

  /** `vmlink backup run`. */
  run(req: RunRequest, ctx: TaskContext) {
    return runBackup(this.d, req, ctx);
  }

  /** `vmlink backup list`: snapshots of every store (or one), newest first; stores that did not answer, named. */
  async list(q: { vm?: string | undefined; store?: string | undefined }): Promise<BackupList> {
    const spec = await appliedSpec(this.d);
    if (q.store) storeSpec(spec, q.store);
    const views = await gatherStores(this.d, spec, q.store ? [q.store] : undefined, q.vm);
    const snapshots = views
      .flatMap((v) =>
        (v.snapshots ?? []).map((snapshot) => ({ store: v.spec.name, offsite: v.spec.offsite, snapshot })),
      )
      .sort(
        (a, b) =>
          Date.parse(b.snapshot.createdAt) - Date.parse(a.snapshot.createdAt) ||
          a.store.localeCompare(b.store),
      );
    const unreachable = views.flatMap((v) =>
      v.unreachable ? [{ store: v.spec.name, reason: v.unreachable }] : [],
    );
    return { snapshots, unreachable };
  }

  /** `vmlink backup verify`: each store checks its snapshots where they are; `deep` sends the store's key along. */
  async verify(
    body: { snapshot?: string | undefined; store?: string | undefined; deep: boolean },
    ctx: TaskContext,
  ) {
    const spec = await appliedSpec(this.d);
    const stores = body.store ? [storeSpec(spec, body.store)] : spec.backupStores;
    const results: VerifyResult[] = [];
    for (const s of stores) {
      const what = `verify of store ${s.name}${body.snapshot ? ` (${body.snapshot})` : ''}`;
      await assertHostUp(this.d.store, this.d.hosts, s.host, what);
      const agent = backupAgent(this.d.agents, spec, s.host);
      if (body.snapshot && !(await agent.snapshots(s.name)).some((x) => x.id === body.snapshot)) {
        if (body.store) ctx.progress(`store ${s.name} has no snapshot ${body.snapshot}`);
        continue;
      }
      const key = body.deep ? await this.storeKey(spec, s) : undefined;
      const job = await agent.verify(s.name, {
        ...(body.snapshot ? { snapshots: [body.snapshot] } : {}),
        ...(key ? { key: await this.d.keys.keyFor(key) } : {}),
      });
      const done = await pollJob(agent, s.host, job, what, {
        ...this.d.poll,
        signal: ctx.signal,
        progress: ctx.progress,
      });
      if (!done.verify)
        throw new BadResponseError(
          `the agent of ${s.host} ended ${what} without its result`,
          `/v1/backup-jobs/${job.id}`,
        );
      const r = done.verify;
      results.push(r);
      ctx.progress(
        `${what}: ${r.snapshots} snapshot(s), ${r.chunksChecked} chunk(s) checked${r.deep ? ' (deep)' : ''}, ${r.problems.length} problem(s)`,
      );
      if (r.problems.length) {
        const first = r.problems[0]!;
        await this.d.store.appendEvent(
          'backup.verify-failed',
          `store ${s.name}: ${r.problems.length} problem(s); first: ${first.snapshot ?? ''}${first.chunk ? ` chunk ${first.chunk}` : ''}: ${first.problem}`,
        );
      }
    }
    return { results };
  }

  /** The key (secret name) of the snapshots in store `s`: of a policy writing there (an offsite store: its source's). */
  private async storeKey(spec: Spec, s: BackupStoreSpec): Promise<string | undefined> {
    let name: string | undefined = s.name;
    const seen = new Set<string>();
    while (name && !seen.has(name)) {
      seen.add(name);
      const p = spec.backups.find((x) => x.store === name);
      if (p) return p.encryption.key;
      name = spec.backupStores.find((x) => x.name === name)?.pullFrom;
    }
    return undefined;
  }

  /** `vmlink backup sync`: each offsite store (or the one named) pulls from its source. */
  async sync(body: { store?: string | undefined }, ctx: TaskContext) {
    const spec = await appliedSpec(this.d);
    const stores = body.store
      ? [storeSpec(spec, body.store)]
      : spec.backupStores.filter((s) => s.offsite && s.pullFrom);
    const results = [];
    for (const s of stores) results.push(await syncStore(this.d, spec, s.name, ctx));
    return { results };
  }

  /** `vmlink backup prune`: retention of each policy (or one) now, then GC of their stores. */
  async prune(
    body: { policy?: string | undefined; dryRun: boolean; gc: boolean },
    ctx: TaskContext,
  ): Promise<BackupPruneResult> {
    const spec = await appliedSpec(this.d);
    const policies = body.policy ? [policyOf(spec, body.policy)] : spec.backups;
    const out: BackupPruneResult = { policies: [], gc: [] };
    for (const p of policies)
      out.policies.push(await retainPolicy(this.d, spec, p, { dryRun: body.dryRun }, ctx));
    if (body.gc && !body.dryRun)
      for (const store of new Set(policies.map((p) => p.store)))
        out.gc.push(await collectGarbage(this.d, spec, store, ctx));
    return out;
  }

  /** `vmlink backup status`: objectives per policy and VM, schedules, stores. */
  async status(): Promise<BackupStatus> {
    const spec = await appliedSpec(this.d);
    const views = await gatherStores(this.d, spec);
    const now = this.d.now();
    const policies: BackupStatus['policies'] = [];
    for (const p of spec.backups) {
      const st = (await this.d.store.get<ScheduleState>(scheduleKey(p.name))) ?? {};
      const last = st.lastRunAt ? new Date(st.lastRunAt) : undefined;
      const lastTest = st.lastRestoreTestAt ? new Date(st.lastRestoreTestAt) : undefined;
      policies.push({
        name: p.name,
        store: p.store,
        schedule: p.schedule,
        ...(st.lastRunAt ? { lastRunAt: st.lastRunAt } : {}),
        ...(st.lastOutcome ? { lastOutcome: st.lastOutcome } : {}),
        ...(st.lastError ? { lastError: st.lastError.slice(0, 2000) } : {}),
        nextRunAt: nextDue(p.schedule, last, now).toISOString(),
        ...(p.restoreTest
          ? { nextRestoreTestAt: nextDue(p.restoreTest.schedule, lastTest, now).toISOString() }
          : {}),
      });
    }
    return {
      objectives: await objectivesOf(this.d, spec, views),
      policies,
      stores: views.map((v) => ({
        name: v.spec.name,
        host: v.spec.host,
        offsite: v.spec.offsite,
        reachable: !v.unreachable,
        ...(v.unreachable ? { reason: v.unreachable } : {}),
        ...(v.status ?? {}),
      })),
    };
  }

  /** Makes sure every store of the applied spec exists on its host (the manager does this before its first run). */
  async ensureStores(spec: Spec): Promise<void> {
    for (const s of spec.backupStores)
      await backupAgent(this.d.agents, spec, s.host).backupStoreEnsure(storeConfig(s));
  }

  /** `vmlink restore`. */
  restore(body: RestoreBody, ctx: TaskContext): Promise<RestoreResult> {
    return restore(this.d, body, ctx);
  }

  /** `vmlink backup restore-test`. */
  restoreTest(policy: string, vm: string | undefined, ctx: TaskContext): Promise<RestoreTestResult> {
    return restoreTest(this.d, policy, vm, ctx);
  }

  /** `vmlink restore discard NAME`. */
  discard(name: string, ctx: TaskContext) {
    return discardRestored(this.d, name, ctx);
  }

  /** `vmlink restore list`. */
  async restored() {
    return {
      restored: (await restoredVms(this.d.store))
        .filter((r) => !r.test)
        .map((r) => ({ name: r.name, host: r.host, snapshot: r.snapshot, store: r.store, at: r.at })),
    };
  }

  /** `vmlink backup key create`. */
  keyCreate(name: string) {
    return this.d.keys.create(name);
  }

  /** `vmlink backup key import`. */
  keyImport(name: string, recoveryKey: string) {
    return this.d.keys.import(name, recoveryKey);
  }
}
