// A backup run of one VM, through its host's agent: the VM's host must be up, the store is ensured on its host, the
// base is the newest snapshot of that VM and policy whose verify did not fail, the key goes with that one request, and
// the agent's job is polled into the task's progress. After a success: the policy's retention for the VM, GC of the
// store, and a sync of the offsite stores pulling from it (their failures are reported, the backup stands).
import { type GcResult, type PullResult, type SnapshotSummary, snapshotId } from '../../shared/backup.js';
import { applyRetention } from '../../shared/backup-retention.js';
import { BadResponseError, ConflictError, KeyMismatchError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import type { Spec } from '../../spec/schema.js';
import type { BackupPolicySpec } from '../../spec/schema-backup.js';
import { secretsOfVm } from '../secrets/usage.js';
import type { TaskContext } from '../tasks.js';
import type { BackupPruneResult, BackupRunResult } from '../wire-backup.js';
import {
  assertHostUp,
  backupAgent,
  bytesText,
  pollJob,
  storeConfig,
  storeLocation,
  storeSpec,
} from './agents.js';
import { appliedSpec, type BackupDeps, hostOfVm, pickPolicy, vmOf } from './deps.js';

/** What to back up. */
export interface RunRequest {
  vm: string;
  policy?: string | undefined;
  full?: boolean | undefined;
}

/** The newest snapshot of `vm` and `policy` in `snapshots` whose last verify did not fail. */
export function pickBase(
  snapshots: SnapshotSummary[],
  vm: string,
  policy: string,
): SnapshotSummary | undefined {
  return snapshots
    .filter((s) => s.vm === vm && s.policy === policy && s.verify?.ok !== false)
    .sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt))[0];
}

/** One line on a snapshot's disks for events and progress. */
export function snapshotLine(s: SnapshotSummary): string {
  const read = s.disks.reduce((n, d) => n + d.readBytes, 0);
  const stored = s.disks.reduce((n, d) => n + d.storedBytes, 0);
  const chunks = s.disks.reduce((n, d) => n + d.newChunks, 0);
  const modes = s.disks
    .map((d) => `${d.name} ${d.mode}${d.fullReason ? ` (${d.fullReason})` : ''}`)
    .join(', ');
  return `${modes}; read ${bytesText(read)}, stored ${bytesText(stored)} in ${chunks} new chunk(s); ${s.consistency}`;
}

/**
 * Backs `req.vm` up under its policy; see the file's head. Events `backup.succeeded` / `backup.failed` name the
 * policy, VM and snapshot (never the key).
 */
export async function runBackup(d: BackupDeps, req: RunRequest, ctx: TaskContext): Promise<BackupRunResult> {
  const spec = await appliedSpec(d);
  vmOf(spec, req.vm);
  const policy = pickPolicy(spec, req.vm, req.policy);
  const release = d.locks.acquire(req.vm, `a backup (policy ${policy.name})`);
  try {
    const result = await backupOnce(d, spec, policy, req, ctx).catch(async (e: unknown) => {
      await d.store.appendEvent(
        'backup.failed',
        `policy ${policy.name} vm ${req.vm}: ${(e as Error).message}`,
      );
      throw e;
    });
    await afterBackup(d, spec, policy, req.vm, ctx);
    return result;
  } finally {
    release();
  }
}

async function backupOnce(
  d: BackupDeps,
  spec: Spec,
  policy: BackupPolicySpec,
  req: RunRequest,
  ctx: TaskContext,
): Promise<BackupRunResult> {
  const host = await hostOfVm(d, spec, req.vm);
  const what = `backup of vm ${req.vm}`;
  await assertHostUp(d.store, d.hosts, host, what);
  const st = storeSpec(spec, policy.store);
  await assertHostUp(d.store, d.hosts, st.host, `${what} to store ${st.name}`);
  const storeAgent = backupAgent(d.agents, spec, st.host);
  const status = await storeAgent.backupStoreEnsure(storeConfig(st));
  const keys = await d.keys.keySet(policy.encryption.key);
  if (status.keyFingerprint && status.keyFingerprint !== keys.fingerprint)
    throw new KeyMismatchError(
      `store ${st.name} holds snapshots under the key with fingerprint ${status.keyFingerprint}, and policy ${policy.name}'s key ${policy.encryption.key} has fingerprint ${keys.fingerprint}: nothing was read or written`,
      `backup-store/${st.name}`,
    );
  const existing = await storeAgent.snapshots(st.name, req.vm);
  const base = req.full ? undefined : pickBase(existing, req.vm, policy.name);
  const id = snapshotId(req.vm, d.now());
  if (existing.some((s) => s.id === id))
    throw new ConflictError(
      `snapshot ${id} exists already in store ${st.name}: try again in a second`,
      `vm/${req.vm}`,
    );
  ctx.progress(
    `${what} on ${host} to store ${st.name} as ${id}${base ? ` (incremental from ${base.id})` : req.full ? ' (full, asked)' : ' (no earlier snapshot: full)'}`,
  );
  const secretNames = secretsOfVm(spec, req.vm);
  const secrets = secretNames.length && d.secretValues ? await d.secretValues(secretNames) : [];
  const agent = backupAgent(d.agents, spec, host);
  const job = await agent.startBackup({
    vm: req.vm,
    snapshot: id,
    policy: policy.name,
    store: storeLocation(spec, st.name),
    key: await d.keys.keyFor(policy.encryption.key),
    ...(base ? { base: base.id } : {}),
    full: req.full ?? false,
    freeze: true,
    ...(secrets.length ? { secrets } : {}),
  });
  const done = await pollJob(agent, host, job, what, {
    ...d.poll,
    signal: ctx.signal,
    progress: ctx.progress,
  });
  if (!done.snapshot)
    throw new BadResponseError(
      `the agent of ${host} ended ${what} without a snapshot`,
      `/v1/backup-jobs/${job.id}`,
    );
  const line = snapshotLine(done.snapshot);
  ctx.progress(`${done.snapshot.id}: ${line}`);
  await d.store.appendEvent(
    'backup.succeeded',
    `policy ${policy.name} ${done.snapshot.id} in ${st.name}: ${line}`,
  );
  return { store: st.name, snapshot: done.snapshot };
}

/** After a backup: retention for the VM, GC, offsite syncs; failures are progress lines and log warnings. */
async function afterBackup(
  d: BackupDeps,
  spec: Spec,
  policy: BackupPolicySpec,
  vm: string,
  ctx: TaskContext,
) {
  const step = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
    } catch (e) {
      ctx.progress(`${what} failed (the backup stands): ${(e as Error).message}`);
      log.warn({ policy: policy.name, vm, err: (e as Error).message }, `backup: ${what} failed`);
    }
  };
  await step('retention', () => retainPolicy(d, spec, policy, { vm, dryRun: false }, ctx));
  await step('garbage collection', () => collectGarbage(d, spec, policy.store, ctx));
  for (const off of spec.backupStores.filter((s) => s.offsite && s.pullFrom === policy.store))
    await step(`sync of offsite store ${off.name}`, () => syncStore(d, spec, off.name, ctx));
}

/**
 * Applies `policy`'s retention to its snapshots in its store (of `vm` only, or of each of its VMs): restic's
 * `forget --keep-*` per VM. Deletes the rest unless `dryRun`.
 */
export async function retainPolicy(
  d: BackupDeps,
  spec: Spec,
  policy: BackupPolicySpec,
  opts: { vm?: string; dryRun: boolean },
  ctx: TaskContext,
): Promise<BackupPruneResult['policies'][number]> {
  const st = storeSpec(spec, policy.store);
  await assertHostUp(d.store, d.hosts, st.host, `retention of policy ${policy.name}`);
  const agent = backupAgent(d.agents, spec, st.host);
  const all = (await agent.snapshots(st.name, opts.vm)).filter((s) => s.policy === policy.name);
  const byVm = new Map<string, SnapshotSummary[]>();
  for (const s of all) byVm.set(s.vm, [...(byVm.get(s.vm) ?? []), s]);
  const kept: Array<{ snapshot: string; reasons: string[] }> = [];
  const remove: string[] = [];
  for (const snaps of byVm.values()) {
    const r = applyRetention(
      snaps.map((s) => ({ id: s.id, at: new Date(s.createdAt) })),
      policy.retention,
    );
    kept.push(...r.keep.map((k) => ({ snapshot: k.id, reasons: k.reasons })));
    remove.push(...r.remove);
  }
  let deleted: string[] = [];
  if (remove.length && !opts.dryRun) {
    deleted = await agent.prune(st.name, remove);
    ctx.progress(
      `policy ${policy.name}: retention deleted ${deleted.length} snapshot(s) from ${st.name}: ${deleted.join(', ')}`,
    );
    await d.store.appendEvent(
      'backup.pruned',
      `policy ${policy.name} in ${st.name}: deleted ${deleted.join(', ')}`,
    );
  } else if (remove.length)
    ctx.progress(`policy ${policy.name}: retention would delete ${remove.join(', ')} (dry run)`);
  return { policy: policy.name, store: st.name, kept, deleted: opts.dryRun ? remove : deleted };
}

/** Garbage collection of store `name` on its host. */
export async function collectGarbage(
  d: BackupDeps,
  spec: Spec,
  name: string,
  ctx: TaskContext,
): Promise<GcResult> {
  const st = storeSpec(spec, name);
  await assertHostUp(d.store, d.hosts, st.host, `garbage collection of store ${name}`);
  const r = await backupAgent(d.agents, spec, st.host).gc(st.name);
  if (r.chunksRemoved)
    ctx.progress(`store ${name}: GC removed ${r.chunksRemoved} chunk(s) (${bytesText(r.bytesFreed)} freed)`);
  return r;
}

/** Offsite store `name` pulls what it lacks from its source store (its agent does the work, checks and retention). */
export async function syncStore(
  d: BackupDeps,
  spec: Spec,
  name: string,
  ctx: TaskContext,
): Promise<PullResult> {
  const st = storeSpec(spec, name);
  if (!st.offsite || !st.pullFrom)
    throw new ConflictError(
      `store ${name} is not an offsite store pulling from another`,
      `backup-store/${name}`,
    );
  const what = `sync of offsite store ${name} from ${st.pullFrom}`;
  await assertHostUp(d.store, d.hosts, st.host, what);
  const agent = backupAgent(d.agents, spec, st.host);
  await agent.backupStoreEnsure(storeConfig(st));
  const job = await agent.pull(st.name, {
    from: storeLocation(spec, st.pullFrom),
    ...(st.retention ? { retention: st.retention } : {}),
  });
  const done = await pollJob(agent, st.host, job, what, {
    ...d.poll,
    signal: ctx.signal,
    progress: ctx.progress,
  });
  if (!done.pull)
    throw new BadResponseError(
      `the agent of ${st.host} ended ${what} without its figures`,
      `/v1/backup-jobs/${job.id}`,
    );
  const p = done.pull;
  const line = `${p.snapshotsPulled.length} snapshot(s), ${p.chunksFetched} chunk(s) fetched (${bytesText(p.bytesFetched)}), ${p.chunksAlreadyThere} already there`;
  ctx.progress(`${what}: ${line}`);
  if (p.snapshotsPulled.length)
    await d.store.appendEvent('backup.synced', `${name} from ${st.pullFrom}: ${line}`);
  return p;
}
