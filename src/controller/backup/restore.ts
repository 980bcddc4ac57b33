// Restores: in place (the VM stopped), as a new VM (from the snapshot's sealed config: renamed, fresh MACs, DHCP, on
// --network when given; made with vm.create, its disks written, started; recorded so apply leaves it alone), and one
// file (a file-restore job on a host). The key that opens the snapshot is found by fingerprint and checked before any
// write; the manifest and config read from a store are untrusted until the key's signature and seal check out.
import { VmConfigSchema } from '../../agent/wire.js';
import { configHash } from '../../plan/hash.js';
import { resolveSpec } from '../../plan/resolve.js';
import {
  type Manifest,
  parseSnapshotId,
  type SnapshotId,
  type SnapshotSummary,
} from '../../shared/backup.js';
import type { BackupKeySet } from '../../shared/backup-crypto.js';
import {
  BadResponseError,
  ConflictError,
  CorruptDataError,
  InvalidRequestError,
  InvalidStateError,
  KeyMismatchError,
  NotFoundError,
  UnsupportedError,
  VmlinkError,
} from '../../shared/errors.js';
import type { DiskConfig, VmConfig } from '../../shared/model.js';
import { derivedMac, tapName } from '../../spec/net.js';
import type { Spec, VmSpec } from '../../spec/schema.js';
import type { BackupPolicySpec } from '../../spec/schema-backup.js';
import { secretsOfVm } from '../secrets/usage.js';
import type { TaskContext } from '../tasks.js';
import type { RestoreBody, RestoreResult } from '../wire-backup.js';
import { assertHostUp, backupAgent, bytesText, pollJob, storeLocation, storeSpec } from './agents.js';
import { appliedSpec, type BackupDeps, hostOfVm, policyOf } from './deps.js';
import { type RestoredVmRecord, restoredKey, restoredVms } from './records.js';
import { claimRestoredOwner, releaseRestoredOwner, restoreHost } from './restore-cluster.js';

const MIB = 1024 * 1024;

/** Where a snapshot was found, and the key (and policy) that opens it. */
export interface FoundSnapshot {
  store: string;
  summary: SnapshotSummary;
  policy: BackupPolicySpec;
  keys: BackupKeySet;
}

/**
 * Finds snapshot `id`: in `store` when given, else the policy's store, then the other stores (offsite last); stores
 * whose host is down are skipped and named if it is found nowhere.
 */
export async function findSnapshot(
  d: BackupDeps,
  spec: Spec,
  id: SnapshotId,
  opts: { store?: string | undefined; policy?: string | undefined },
): Promise<FoundSnapshot> {
  const { vm } = parseSnapshotId(id);
  let order: string[];
  if (opts.store) order = [storeSpec(spec, opts.store).name];
  else {
    const preferred = opts.policy
      ? [policyOf(spec, opts.policy).store]
      : spec.backups.filter((p) => p.vms.includes(vm)).map((p) => p.store);
    const rest = [...spec.backupStores]
      .sort((a, b) => Number(a.offsite) - Number(b.offsite))
      .map((s) => s.name);
    order = [...new Set([...preferred, ...rest])];
  }
  const skipped: string[] = [];
  for (const name of order) {
    const st = storeSpec(spec, name);
    try {
      await assertHostUp(d.store, d.hosts, st.host, `store ${name}`);
      const found = (await backupAgent(d.agents, spec, st.host).snapshots(name, vm)).find((s) => s.id === id);
      if (found) return { store: name, summary: found, ...(await keyOf(d, spec, found, opts.policy)) };
    } catch (e) {
      if (e instanceof KeyMismatchError || opts.store) throw e;
      skipped.push(`${name}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new NotFoundError(
    'snapshot',
    `${id} (looked in ${order.join(', ') || 'no store'}${skipped.length ? `; not asked: ${skipped.join('; ')}` : ''})`,
  );
}

/** The policy whose key opens `s`: `policy` when given (its key must match), else any whose fingerprint matches. */
async function keyOf(
  d: BackupDeps,
  spec: Spec,
  s: SnapshotSummary,
  policy?: string,
): Promise<{ policy: BackupPolicySpec; keys: BackupKeySet }> {
  if (policy) {
    const p = policyOf(spec, policy);
    const keys = await d.keys.keySet(p.encryption.key);
    if (keys.fingerprint !== s.keyFingerprint)
      throw new KeyMismatchError(
        `snapshot ${s.id} was made under the key with fingerprint ${s.keyFingerprint}; policy ${p.name}'s key ${p.encryption.key} has fingerprint ${keys.fingerprint}: nothing was written`,
        `snapshot/${s.id}`,
      );
    return { policy: p, keys };
  }
  const candidates = [...spec.backups].sort(
    (a, b) => Number(b.name === s.policy) - Number(a.name === s.policy),
  );
  const tried = new Set<string>();
  for (const p of candidates) {
    if (tried.has(p.encryption.key)) continue;
    tried.add(p.encryption.key);
    const keys = await d.keys.keySet(p.encryption.key).catch(() => undefined);
    if (keys?.fingerprint === s.keyFingerprint) return { policy: p, keys };
  }
  throw new KeyMismatchError(
    `no policy's key opens snapshot ${s.id} (made under the key with fingerprint ${s.keyFingerprint}; tried ${[...tried].join(', ') || 'none'}): import that key (vmlink backup key import) and name it in a policy; nothing was written`,
    `snapshot/${s.id}`,
  );
}

/** Restores `body.snapshot` as the body asks; see the file's head. */
export async function restore(d: BackupDeps, body: RestoreBody, ctx: TaskContext): Promise<RestoreResult> {
  const spec = await appliedSpec(d);
  const found = await findSnapshot(d, spec, body.snapshot, body);
  ctx.progress(
    `snapshot ${body.snapshot} found in store ${found.store} (key of policy ${found.policy.name})`,
  );
  const t = body.target;
  switch (t.kind) {
    case 'in-place':
      return restoreInPlace(d, spec, found, t.host, ctx);
    case 'new':
      return restoreAsNew(d, spec, found, t, ctx);
    case 'file':
      return restoreFile(d, spec, found, t, ctx);
  }
}

async function restoreInPlace(
  d: BackupDeps,
  spec: Spec,
  f: FoundSnapshot,
  onHost: string | undefined,
  ctx: TaskContext,
): Promise<RestoreResult> {
  const vm = f.summary.vm;
  const record = (await restoredVms(d.store)).find((r) => r.name === vm);
  if (!spec.vms.some((v) => v.name === vm) && !record) throw new NotFoundError('vm', vm);
  const home = record?.host ?? (await hostOfVm(d, spec, vm));
  let host = home;
  if (onHost && onHost !== home) {
    // Another host only when the VM's own is down: a VM must never run from two copies of its disks.
    try {
      await assertHostUp(d.store, d.hosts, home, 'check');
    } catch {
      host = onHost;
    }
    if (host === home)
      throw new ConflictError(
        `vm ${vm}'s host ${home} is up: restore it in place there (without --host); --host names another host only when ${home} has failed`,
        `vm/${vm}`,
      );
  }
  const what = `restore of ${f.summary.id} over vm ${vm} on ${host}`;
  await assertHostUp(d.store, d.hosts, host, what);
  const agent = backupAgent(d.agents, spec, host);
  const seen = (await agent.report()).vms.find((v) => v.name === vm);
  if (!seen) throw new NotFoundError('vm', `${vm} on ${host}`);
  if (seen.state !== 'stopped')
    throw new InvalidStateError(
      `vm ${vm} is ${seen.state} on ${host}: a restore in place overwrites its disks, so stop it first (vmlink vm stop ${vm}); nothing was written`,
      `vm/${vm}`,
    );
  const release = d.locks.acquire(vm, `a restore of ${f.summary.id}`);
  try {
    const names = secretsOfVm(spec, vm);
    const secrets = names.length && d.secretValues ? await d.secretValues(names) : [];
    const job = await agent.startRestore({
      snapshot: f.summary.id,
      store: storeLocation(spec, f.store),
      key: await d.keys.keyFor(f.policy.encryption.key),
      vm,
      ...(secrets.length ? { secrets } : {}),
    });
    const r = await restoreDone(d, agent, host, job, what, ctx);
    await d.store.appendEvent(
      'backup.restored',
      `${f.summary.id} from ${f.store} over vm ${vm} on ${host}: ${bytesText(r.bytesWritten)} written`,
    );
    return { snapshot: f.summary.id, store: f.store, vm, host, ...r };
  } finally {
    release();
  }
}

async function restoreDone(
  d: BackupDeps,
  agent: ReturnType<typeof backupAgent>,
  host: string,
  job: Awaited<ReturnType<ReturnType<typeof backupAgent>['startRestore']>>,
  what: string,
  ctx: TaskContext,
): Promise<{ seconds: number; bytesWritten: number }> {
  const done = await pollJob(agent, host, job, what, {
    ...d.poll,
    signal: ctx.signal,
    progress: ctx.progress,
  });
  if (!done.restored)
    throw new BadResponseError(
      `the agent of ${host} ended ${what} without its figures`,
      `/v1/backup-jobs/${job.id}`,
    );
  const bytesWritten = done.restored.disks.reduce((n, x) => n + x.bytesWritten, 0);
  ctx.progress(`${what}: ${bytesText(bytesWritten)} written in ${done.restored.seconds.toFixed(1)} s`);
  return { seconds: done.restored.seconds, bytesWritten };
}

/** The manifest of `f`, checked against its key (fingerprint, then signature), and its VM config, opened and parsed. */
export async function openedConfig(
  d: BackupDeps,
  spec: Spec,
  f: FoundSnapshot,
): Promise<{ manifest: Manifest; config: VmConfig }> {
  const st = storeSpec(spec, f.store);
  const manifest = await backupAgent(d.agents, spec, st.host).manifest(f.store, f.summary.id);
  if (manifest.id !== f.summary.id)
    throw new CorruptDataError(
      `store ${f.store} answered snapshot ${manifest.id} for ${f.summary.id}`,
      `snapshot/${f.summary.id}`,
    );
  f.keys.verifyManifest(manifest);
  const parsed = VmConfigSchema.safeParse(f.keys.openConfig(manifest.config));
  if (!parsed.success)
    throw new CorruptDataError(
      `snapshot ${f.summary.id}: its sealed VM config opens but is not a VM config this vmlink reads (${parsed.error.issues[0]?.message ?? 'invalid'})`,
      `snapshot/${f.summary.id}`,
    );
  return { manifest, config: parsed.data as VmConfig };
}

/**
 * The config of a new VM `name` from a snapshot's: renamed, every NIC with a fresh MAC and tap and no fixed address
 * (DHCP), on `network` when given; pool-volume disks become the VM's own disks of the snapshot's sizes (a copy never
 * opens the original's volumes), devices passed through are dropped; stopped until its disks are written.
 */
export function newVmConfig(
  spec: Spec,
  source: VmConfig,
  manifest: Manifest,
  name: string,
  host: string,
  network?: string,
): { config: VmConfig; notes: string[] } {
  const notes: string[] = [];
  if (source.rootSource)
    throw new UnsupportedError(
      `snapshot ${manifest.id}: vm ${source.name} boots from pool volume ${source.rootSource.volume}; restore --as of such a VM is not supported yet: restore it in place, or into a new volume with vmlink volume commands`,
      `snapshot/${manifest.id}`,
    );
  const sizes = new Map(manifest.disks.map((x) => [x.name, x.sizeBytes]));
  const disks: DiskConfig[] = source.disks.map((disk) => {
    if (!disk.source || disk.media === 'cdrom') return disk;
    const { source: _dropped, ...own } = disk;
    const bytes = sizes.get(disk.name) ?? (disk.sizeMiB ?? 0) * MIB;
    notes.push(`disk ${disk.name}: from pool volume ${disk.source.volume} to the new VM's own disk`);
    return { ...own, sizeMiB: Math.max(1, Math.ceil(bytes / MIB)) };
  });
  const template = network ? nicOn(spec, network, name, host) : undefined;
  const nics = source.nics.map((nic, i) => {
    // The source's address (fixed or reserved) stays the source's: the copy gets a new MAC and no address of its own.
    const { staticIp: _ip, reservedIp: _reserved, ...rest } = template ?? nic;
    return { ...rest, mac: derivedMac(name, i), tap: tapName(name, i) };
  });
  if (source.devices?.length)
    notes.push(`devices passed through to ${source.name} are not given to the copy`);
  const { devices: _devices, ...base } = source;
  return { config: { ...base, name, disks, nics, state: 'stopped' }, notes };
}

/** A NIC on spec network `network` for a VM on `host`, resolved as the planner resolves one. */
function nicOn(spec: Spec, network: string, vm: string, host: string) {
  if (!spec.networks.some((n) => n.name === network)) throw new NotFoundError('network', network);
  const template = spec.vms.find((v) => v.host === host) ?? spec.vms[0];
  if (!template)
    throw new InvalidRequestError(`cannot resolve a NIC on network ${network} without a VM in the spec`);
  const probe = {
    ...template,
    name: vm,
    host,
    nics: [{ network }],
    disks: [],
    devices: [],
  } as unknown as VmSpec;
  try {
    const d = resolveSpec({ ...spec, vms: [...spec.vms.filter((v) => v.name !== vm), probe] });
    const nic = d[host]?.vms.find((v) => v.name === vm)?.nics[0];
    if (nic) return nic;
  } catch (e) {
    throw new InvalidRequestError(`network ${network} cannot reach host ${host}: ${(e as Error).message}`);
  }
  throw new InvalidRequestError(`network ${network} cannot reach host ${host}`);
}

/** Whether `name` is free for a new VM: not in the spec, not restored already, not on `host`. */
async function assertNameFree(
  d: BackupDeps,
  spec: Spec,
  agent: ReturnType<typeof backupAgent>,
  name: string,
  host: string,
) {
  if (spec.vms.some((v) => v.name === name))
    throw new ConflictError(`vm ${name} is in the spec: restore --as needs a new name`, `vm/${name}`);
  if ((await restoredVms(d.store)).some((r) => r.name === name))
    throw new ConflictError(
      `vm ${name} was made by an earlier restore: discard it first (vmlink restore discard ${name})`,
      `vm/${name}`,
    );
  if ((await agent.report()).vms.some((v) => v.name === name))
    throw new ConflictError(`a vm ${name} exists on ${host}: restore --as needs a new name`, `vm/${name}`);
}

/** What `restoreAsNew` returns beyond the API's answer (restore tests use the VM's name and host). */
async function restoreAsNew(
  d: BackupDeps,
  spec: Spec,
  f: FoundSnapshot,
  t: Extract<RestoreBody['target'], { kind: 'new' }>,
  ctx: TaskContext,
  opts: { test?: true } = {},
): Promise<RestoreResult> {
  const { manifest, config } = await openedConfig(d, spec, f);
  const { host, why } = await restoreHost(d, spec, f, config, t);
  if (why) ctx.progress(`${t.name}: ${why}`);
  const what = `restore of ${f.summary.id} as vm ${t.name} on ${host}`;
  await assertHostUp(d.store, d.hosts, host, what);
  const agent = backupAgent(d.agents, spec, host);
  await assertNameFree(d, spec, agent, t.name, host);
  const made = newVmConfig(spec, config, manifest, t.name, host, t.network);
  for (const n of made.notes) ctx.progress(`${t.name}: ${n}`);
  const release = d.locks.acquire(t.name, what);
  const started = Date.now();
  // In a cluster the owner record comes first (nothing is written when another holds the name), then the
  // restore's record: an apply running meanwhile must not delete the half-made VM.
  await claimRestoredOwner(d, spec, t.name, host, ctx).catch((e: unknown) => {
    release();
    throw e;
  });
  try {
    await d.store.put(restoredKey(t.name), {
      name: t.name,
      host,
      snapshot: f.summary.id,
      store: f.store,
      at: d.now().toISOString(),
      ...(opts.test ? { test: true as const } : {}),
    } satisfies RestoredVmRecord);
    await agent.act({ kind: 'vm.create', vm: made.config, configHash: configHash(made.config) });
    ctx.progress(`${t.name}: created on ${host} (stopped)`);
    const job = await agent.startRestore({
      snapshot: f.summary.id,
      store: storeLocation(spec, f.store),
      key: await d.keys.keyFor(f.policy.encryption.key),
      vm: t.name,
    });
    const r = await restoreDone(d, agent, host, job, what, ctx);
    if (t.start) {
      await agent.act({ kind: 'vm.start', name: t.name });
      ctx.progress(`${t.name}: started`);
    }
    if (!opts.test)
      await d.store.appendEvent(
        'backup.restored',
        `${f.summary.id} from ${f.store} as vm ${t.name} on ${host}: ${bytesText(r.bytesWritten)} written`,
      );
    return {
      snapshot: f.summary.id,
      store: f.store,
      vm: t.name,
      host,
      bytesWritten: r.bytesWritten,
      seconds: (Date.now() - started) / 1000,
    };
  } catch (e) {
    if (e instanceof VmlinkError && e.subject === `vm/${t.name}` && e.kind === 'conflict') throw e;
    throw new VmlinkError(
      e instanceof VmlinkError ? e.kind : 'internal',
      `${(e as Error).message}\n(vm ${t.name} on ${host} is kept as it is for a look; vmlink restore discard ${t.name} removes it)`,
      { subject: `vm/${t.name}`, cause: e },
    );
  } finally {
    release();
  }
}

/** Restores `f` as throwaway VM `name` (restore tests): recorded as a test VM. */
export function restoreForTest(
  d: BackupDeps,
  spec: Spec,
  f: FoundSnapshot,
  target: { name: string; host?: string; network: string },
  ctx: TaskContext,
): Promise<RestoreResult> {
  return restoreAsNew(d, spec, f, { kind: 'new', ...target, start: true }, ctx, { test: true });
}

async function restoreFile(
  d: BackupDeps,
  spec: Spec,
  f: FoundSnapshot,
  t: Extract<RestoreBody['target'], { kind: 'file' }>,
  ctx: TaskContext,
): Promise<RestoreResult> {
  const specHost = spec.vms.find((v) => v.name === f.summary.vm)?.host;
  const host = t.host ?? specHost ?? f.summary.host;
  if (!spec.hosts.some((h) => h.name === host)) throw new NotFoundError('host', host);
  if (!f.summary.disks.some((x) => x.name === t.disk))
    throw new NotFoundError(
      'disk',
      `${t.disk} in snapshot ${f.summary.id} (it has ${f.summary.disks.map((x) => x.name).join(', ')})`,
    );
  const what = `restore of ${t.path} from ${f.summary.id} disk ${t.disk} on ${host}`;
  await assertHostUp(d.store, d.hosts, host, what);
  const agent = backupAgent(d.agents, spec, host);
  const started = Date.now();
  const job = await agent.startFileRestore({
    snapshot: f.summary.id,
    store: storeLocation(spec, f.store),
    key: await d.keys.keyFor(f.policy.encryption.key),
    disk: t.disk,
    ...(t.partition ? { partition: t.partition } : {}),
    path: t.path,
  });
  const done = await pollJob(agent, host, job, what, {
    ...d.poll,
    signal: ctx.signal,
    progress: ctx.progress,
  });
  if (!done.file)
    throw new BadResponseError(
      `the agent of ${host} ended ${what} without the file`,
      `/v1/backup-jobs/${job.id}`,
    );
  ctx.progress(`${what}: ${bytesText(done.file.size)}`);
  return {
    snapshot: f.summary.id,
    store: f.store,
    vm: f.summary.vm,
    host,
    seconds: (Date.now() - started) / 1000,
    bytesWritten: 0,
    file: done.file,
  };
}

/** Deletes VM `name` made by `restore --as` from its host, then its record. */
export async function discardRestored(
  d: BackupDeps,
  name: string,
  ctx: TaskContext,
): Promise<{ name: string; host: string }> {
  const spec = await appliedSpec(d);
  const r = (await restoredVms(d.store)).find((x) => x.name === name);
  if (!r)
    throw new NotFoundError('restored vm', `${name} (vmlink restore list shows those restore --as made)`);
  await assertHostUp(d.store, d.hosts, r.host, `discard of vm ${name}`);
  const release = d.locks.acquire(name, `the discard of ${name}`);
  try {
    const agent = backupAgent(d.agents, spec, r.host);
    if ((await agent.report()).vms.some((v) => v.name === name)) await agent.act({ kind: 'vm.delete', name });
    await d.store.delete(restoredKey(name));
    ctx.progress(`vm ${name} deleted from ${r.host}`);
    if (await releaseRestoredOwner(d, name)) ctx.progress(`vm ${name}: owner record released`);
    if (!r.test)
      await d.store.appendEvent('backup.restore-discarded', `vm ${name} on ${r.host} (from ${r.snapshot})`);
    return { name, host: r.host };
  } finally {
    release();
  }
}
