// The storage part of the diff: pools and volumes wanted vs reported -> pool and volume steps, and the refusals a
// plan must make before anything runs (a shrink, a pool that still holds data, a resize the backend cannot do live).
import { ConflictError, InvalidRequestError } from '../shared/errors.js';
import type { HostReport, ObservedVm, VmConfig } from '../shared/model.js';
import {
  type ObservedPool,
  POOL_FEATURE_REASONS,
  POOL_FEATURES,
  type PoolConfig,
  vmVolumeName,
} from '../shared/storage.js';
import { cloneRootName } from '../spec/storage.js';
import { canonicalJson, configHash } from './hash.js';
import type { DesiredState } from './resolve.js';
import type { Step } from './steps.js';
import type { DesiredVolume } from './storage.js';

/** Hash of a pool config, as the pool's backend stores it (`ensurePool`'s configHash) and reports it back. */
export function poolConfigHash(pool: PoolConfig): string {
  return configHash(pool);
}

/** One refusal: the spec path (or object) it concerns, and whether it is a conflict with what exists. */
interface Refusal {
  path: string;
  message: string;
  conflict: boolean;
}

/** What the storage diff adds to a plan. */
export interface StoragePlan {
  steps: Step[];
  unchanged: string[];
  /** Volumes the plan leaves in place although nothing in the spec names them any more, one sentence each. */
  kept: string[];
}

/** A volume a VM config opens from a pool: each pool disk and the boot volume, with the disk's name. */
export function vmPoolVolumes(
  vm: VmConfig,
): Array<{ pool: string; volume: string; disk: string; made: boolean }> {
  const out: ReturnType<typeof vmPoolVolumes> = [];
  for (const d of vm.disks)
    if (d.source)
      out.push({
        pool: d.source.pool,
        volume: d.source.volume,
        disk: d.name,
        // A volume made for the VM carries its size in the disk (a named volume's size is its own).
        made: d.sizeMiB !== undefined && d.source.volume === vmVolumeName(vm.name, d.name),
      });
  if (vm.rootSource)
    out.push({
      pool: vm.rootSource.pool,
      volume: vm.rootSource.volume,
      disk: 'root',
      made: vm.rootSource.volume === cloneRootName(vm.name),
    });
  return out;
}

const key = (pool: string, volume: string) => `${pool}/${volume}`;

/** `path /a -> /b`, `chap.user x -> y`: what differs between two pool configs, field by field. */
export function poolFieldChanges(from: PoolConfig, to: PoolConfig): string[] {
  const fields = ['type', 'path', 'clients', 'chap', 'nfs', 'iscsi'] as const;
  const show = (v: unknown) => (v === undefined ? 'none' : typeof v === 'string' ? v : canonicalJson(v));
  return fields
    .filter((f) => canonicalJson(from[f]) !== canonicalJson(to[f]))
    .map((f) => `${f} ${show(from[f])} -> ${show(to[f])}`);
}

/**
 * Plans pool and volume steps. `vmSteps` are the VM steps planned already (which VMs this plan deletes, stops,
 * starts). Hosts whose desired state has no `pools` (a destroy) keep their pools and named volumes; volumes made
 * for a VM go with the VM wherever nothing wants them any more. Throws `InvalidRequestError` (a shrink) or
 * `ConflictError` (a pool that still holds volumes, a resize that needs a stopped VM) naming every refusal.
 */
export function planStorage(
  desired: DesiredState,
  observed: HostReport[],
  vmSteps: readonly Step[],
): StoragePlan {
  const steps: Step[] = [];
  const unchanged: string[] = [];
  const kept: string[] = [];
  const refusals: Refusal[] = [];

  // Where each pool is reported and where it is wanted.
  const seenPools = new Map<string, { host: string; pool: ObservedPool }>();
  for (const r of observed) for (const p of r.pools ?? []) seenPools.set(p.name, { host: r.host, pool: p });
  const wantPools = new Map<string, { host: string; pool: PoolConfig }>();
  const wantVolumes = new Map<string, { host: string; v: DesiredVolume }>();
  for (const [host, d] of Object.entries(desired)) {
    for (const p of d.pools ?? []) wantPools.set(p.name, { host, pool: p });
    for (const v of d.volumes ?? []) wantVolumes.set(key(v.config.pool, v.config.name), { host, v });
  }
  const observedVm = new Map<string, { host: string; vm: ObservedVm }>();
  for (const r of observed)
    for (const vm of r.vms) observedVm.set(`${r.host}/${vm.name}`, { host: r.host, vm });

  // Volumes of the VMs this plan deletes that were made for them: they go after the VM (unless wanted again).
  const deleted = new Set<string>();
  const stopped = new Set<string>();
  for (const s of vmSteps) {
    if (s.kind === 'vm.delete') {
      const cfg = observedVm.get(`${s.host}/${s.name}`)?.vm.config;
      for (const u of cfg ? vmPoolVolumes(cfg) : [])
        if (u.made && !wantVolumes.has(key(u.pool, u.volume))) deleted.add(key(u.pool, u.volume));
    }
    if (s.kind === 'vm.stop') stopped.add(`${s.host}/${s.name}`);
  }

  // Pools.
  for (const [host, d] of Object.entries(desired)) {
    if (!d.pools) continue;
    for (const pool of d.pools) {
      const hash = poolConfigHash(pool);
      const seen = seenPools.get(pool.name);
      const o = seen?.host === host ? seen.pool : undefined;
      if (!o) {
        steps.push({ kind: 'pool.create', host, pool, configHash: hash, reason: 'not on the host' });
        continue;
      }
      const changes = o.config ? poolFieldChanges(o.config, pool) : [];
      const moves = o.config && o.volumes.length > 0 && (o.config.path !== pool.path || o.type !== pool.type);
      if (moves)
        refusals.push({
          path: `${d.poolPaths?.[pool.name] ?? `pools/${pool.name}`}.${o.type !== pool.type ? 'type' : 'path'}`,
          message: `pool "${pool.name}" on host "${host}" holds ${o.volumes.length} volume(s) in ${o.config?.path} (${o.type}); changing its ${o.type !== pool.type ? 'type' : 'path'} would leave them behind: keep it, or move the data and empty the pool first`,
          conflict: true,
        });
      else if (o.problems.length > 0)
        steps.push({
          kind: 'pool.update',
          host,
          pool,
          configHash: hash,
          reason: `repair: ${o.problems.join('; ')}`,
        });
      else if (o.configHash !== hash)
        steps.push({
          kind: 'pool.update',
          host,
          pool,
          configHash: hash,
          reason: 'configuration changed',
          ...(changes.length ? { changes } : {}),
        });
      else unchanged.push(`pool ${pool.name} on ${host}`);
    }
  }
  for (const { host, pool: o } of seenPools.values()) {
    const d = desired[host];
    if (!d?.pools) continue; // a destroy, or a host gone from the spec: its pools and their data stay
    const want = wantPools.get(o.name);
    if (want?.host === host) continue;
    const left = o.volumes.filter((v) => !deleted.has(key(o.name, v.name)));
    if (left.length > 0) {
      refusals.push({
        path: 'pools',
        message: `pool "${o.name}" on host "${host}" is ${want ? `moving to host "${want.host}"` : 'no longer in the spec'} but still holds volume(s) ${left.map((v) => v.name).join(', ')}: nothing is deleted with data in it; delete them with \`vmlink volume delete ${o.name}/NAME\` first, or keep the pool in the spec`,
        conflict: true,
      });
      continue;
    }
    steps.push({
      kind: 'pool.delete',
      host,
      pool: o.config ?? { name: o.name, type: o.type, path: '/var/lib/vmlink/pools/unknown' },
      reason: want ? `moved to ${want.host}` : 'not in the spec',
    });
  }

  // Volumes wanted: create the missing, grow the grown.
  const users = volumeUsers(desired, observed);
  for (const [k, { host, v }] of wantVolumes) {
    const seen = seenPools.get(v.config.pool);
    const o = seen?.host === host ? seen.pool.volumes.find((x) => x.name === v.config.name) : undefined;
    if (!o) {
      const template = v.config.from
        ? seen?.pool.volumes.find((x) => x.name === v.config.from?.volume)
        : undefined;
      // A clone is at least its template's size (and a template the spec does not size gives its own).
      const sizeMiB = Math.max(v.config.sizeMiB, template ? Math.ceil(template.sizeMiB) : 0);
      steps.push({
        kind: 'volume.create',
        host,
        volume: { ...v.config, sizeMiB },
        reason: 'not in the pool',
      });
      continue;
    }
    if (o.encrypted !== (v.config.encryption !== undefined)) {
      refusals.push({
        path: `${v.path}.encryption`,
        message: `volume ${k} was made ${o.encrypted ? 'encrypted' : 'unencrypted'}, and a volume keeps the encryption it was made with: ${o.encrypted ? 'keep encryption' : 'remove encryption'} in the spec, or make a new volume and copy the data`,
        conflict: true,
      });
      continue;
    }
    const want = v.config.sizeMiB;
    const have = Math.ceil(o.sizeMiB);
    // A volume an alert rule grew (up to its maxMiB) keeps its size: the spec's is where it started.
    const scaledUp = v.scaleMaxMiB !== undefined && have > want && have <= v.scaleMaxMiB;
    if (v.sizeFromTemplate || want === have || scaledUp) {
      unchanged.push(`volume ${k} on ${host}`);
      continue;
    }
    if (want < have) {
      refusals.push({
        path: `${v.path}.sizeMiB`,
        message: `volume ${k} is ${have} MiB and the spec asks for ${want} MiB; volumes only grow (a shrink would cut off the guest's data): set sizeMiB to ${have} or more`,
        conflict: false,
      });
      continue;
    }
    const pool = wantPools.get(v.config.pool)?.pool;
    const type = pool?.type ?? seen?.pool.type ?? 'dir';
    const user = users.get(k);
    const live = user?.running === true && !stopped.has(`${user.host}/${user.vm}`);
    const base = {
      kind: 'volume.resize' as const,
      pool: v.config.pool,
      name: v.config.name,
      fromMiB: have,
      sizeMiB: want,
    };
    if (!user || !live) {
      steps.push({ ...base, host, reason: user ? `vm ${user.vm} is stopped` : 'no VM has it open' });
    } else if (POOL_FEATURES[type].onlineResize && user.disk !== undefined) {
      steps.push({
        ...base,
        host: user.host,
        vm: { name: user.vm, disk: user.disk },
        reason: `vm ${user.vm} runs: grown online`,
      });
    } else {
      refusals.push({
        path: `${v.path}.sizeMiB`,
        message: `volume ${k} is open in running vm ${user.vm} on ${user.host} and ${type} pools cannot grow a volume online${POOL_FEATURE_REASONS[type]?.onlineResize ? ` (${POOL_FEATURE_REASONS[type]?.onlineResize})` : ''}: stop vm ${user.vm} first (state: stopped), apply, then start it`,
        conflict: true,
      });
    }
  }

  // Volumes no longer wanted: those made for a deleted VM go; the others stay and the plan says so.
  for (const { host, pool } of seenPools.values())
    for (const v of pool.volumes) {
      const k = key(pool.name, v.name);
      if (wantVolumes.has(k)) continue;
      if (deleted.has(k))
        steps.push({
          kind: 'volume.delete',
          host,
          pool: pool.name,
          name: v.name,
          reason: 'made for a VM that is deleted',
        });
      else if (desired[host]?.volumes)
        kept.push(
          `volume ${k} on ${host} is no longer named by the spec and is kept with its data (delete it with \`vmlink volume delete ${k}\`)`,
        );
    }

  if (refusals.length) {
    const text = refusals.map((r) => `  ${r.path}: ${r.message}`).join('\n');
    const msg = `the plan is refused, nothing was changed:\n${text}`;
    const first = refusals[0]!.path;
    throw refusals.some((r) => r.conflict)
      ? new ConflictError(msg, first)
      : new InvalidRequestError(msg, first);
  }
  return { steps, unchanged, kept };
}

/**
 * The VM that has each volume open now or will have it: its host, the disk it is attached as, and whether it runs
 * now and is meant to keep running.
 */
function volumeUsers(
  desired: DesiredState,
  observed: HostReport[],
): Map<string, { host: string; vm: string; disk?: string; running: boolean }> {
  const out = new Map<string, { host: string; vm: string; disk?: string; running: boolean }>();
  const wantState = new Map<string, VmConfig>();
  for (const [host, d] of Object.entries(desired))
    for (const vm of d.vms) wantState.set(`${host}/${vm.name}`, vm);
  for (const r of observed)
    for (const o of r.vms) {
      const want = wantState.get(`${r.host}/${o.name}`);
      const running = o.state === 'running' && want?.state === 'running';
      for (const u of o.config ? vmPoolVolumes(o.config) : [])
        out.set(key(u.pool, u.volume), { host: r.host, vm: o.name, disk: u.disk, running });
    }
  return out;
}
