// Storage as the API shows it (issue 10), from the applied spec and the hosts' reports, pure: pools, volumes and who
// uses them, and the capacity report. `storage-control.ts` gathers the reports and acts.
import type { HostReport } from '../shared/model.js';
import {
  CAPACITY_WARN_RATIO,
  type ObservedPool,
  POOL_FEATURES,
  type PoolType,
  projectedNeedMiB,
  vmVolumeName,
} from '../shared/storage.js';
import type { Spec } from '../spec/schema.js';
import type { CapacityReport, PoolView, VolumeView } from './wire-storage.js';

/** Each spec host's report, or why there is none. */
export type HostReports = ReadonlyMap<string, HostReport | { error: string }>;

const reportOf = (reports: HostReports, host: string): HostReport | undefined => {
  const r = reports.get(host);
  return r && !('error' in r) ? r : undefined;
};
const errorOf = (reports: HostReports, host: string): string | undefined => {
  const r = reports.get(host);
  return r === undefined ? `host ${host} was not asked` : 'error' in r ? r.error : undefined;
};

/** A VM's use of a volume: the disk name it has in the VM (`root` when it boots from it). */
export interface VolumeUser {
  vm: string;
  host: string;
  disk: string;
  running: boolean;
}

/** Where a pool lives and what it is, by the applied spec. */
export interface PoolPlace {
  name: string;
  type: PoolType;
  host: string;
}

/** The pools of the applied spec, then any other pool a host reports (an orphan left by an older spec). */
export function poolPlaces(spec: Spec | undefined, reports: HostReports): PoolPlace[] {
  const places: PoolPlace[] = (spec?.pools ?? []).map((p) => ({ name: p.name, type: p.type, host: p.host }));
  for (const [host, r] of reports)
    if (!('error' in r))
      for (const p of r.pools ?? [])
        if (!places.some((x) => x.name === p.name)) places.push({ name: p.name, type: p.type, host });
  return places;
}

/** The pool `name` as its host reports it. */
export function observedPool(reports: HostReports, place: PoolPlace): ObservedPool | undefined {
  return reportOf(reports, place.host)?.pools?.find((p) => p.name === place.name);
}

/** `GET /v1/pools`. */
export function poolViews(spec: Spec | undefined, reports: HostReports): PoolView[] {
  return poolPlaces(spec, reports).map((place): PoolView => {
    const seen = observedPool(reports, place);
    const base = {
      ...place,
      inSpec: !!spec?.pools.some((p) => p.name === place.name),
      features: POOL_FEATURES[place.type],
    };
    const error = errorOf(reports, place.host);
    if (error) return { ...base, state: 'unknown', volumes: 0, problems: [], error };
    if (!seen) return { ...base, state: 'missing', volumes: 0, problems: [] };
    return {
      ...base,
      state: seen.problems.length ? 'problems' : 'ok',
      capacityMiB: seen.capacityMiB,
      usedMiB: seen.usedMiB,
      freeMiB: seen.freeMiB,
      volumes: seen.volumes.length,
      problems: seen.problems,
    };
  });
}

/**
 * Every VM that uses volume `pool/volume`: by the applied spec (a `{pool, volume}` disk, a `{pool, sizeMiB}` disk's
 * own volume, the boot volume or its clone) and by the configs the hosts report (VMs an older spec left).
 */
export function volumeUsers(
  spec: Spec | undefined,
  reports: HostReports,
  pool: string,
  volume: string,
): VolumeUser[] {
  const users = new Map<string, VolumeUser>();
  const running = (host: string, vm: string) =>
    reportOf(reports, host)?.vms.find((v) => v.name === vm)?.state === 'running';
  for (const vm of spec?.vms ?? []) {
    const disks = vm.disks.flatMap((d) =>
      d.pool === pool && (d.volume ?? vmVolumeName(vm.name, d.name)) === volume ? [d.name] : [],
    );
    const img = vm.image;
    if (
      img.kind === 'volume' &&
      img.pool === pool &&
      (img.clone ? vmVolumeName(vm.name, 'root') : img.volume) === volume
    )
      disks.unshift('root');
    if (disks[0] !== undefined)
      users.set(vm.name, { vm: vm.name, host: vm.host, disk: disks[0], running: running(vm.host, vm.name) });
  }
  for (const [host, r] of reports) {
    if ('error' in r) continue;
    for (const vm of r.vms) {
      const cfg = vm.config;
      if (!cfg || users.has(vm.name)) continue;
      const disk =
        cfg.rootSource?.pool === pool && cfg.rootSource.volume === volume
          ? 'root'
          : cfg.disks.find((d) => d.source?.pool === pool && d.source.volume === volume)?.name;
      if (disk) users.set(vm.name, { vm: vm.name, host, disk, running: vm.state === 'running' });
    }
  }
  return [...users.values()].sort((a, b) => a.vm.localeCompare(b.vm));
}

/** The spec path that declares volume `pool/volume` (kept by apply), if any. */
export function declaredAt(spec: Spec | undefined, pool: string, volume: string): string | undefined {
  const i = spec?.volumes.findIndex((v) => v.pool === pool && v.name === volume) ?? -1;
  if (i >= 0) return `volumes[${i}]`;
  for (const [vi, vm] of (spec?.vms ?? []).entries()) {
    const di = vm.disks.findIndex(
      (d) => d.pool === pool && !d.volume && vmVolumeName(vm.name, d.name) === volume,
    );
    if (di >= 0) return `vms[${vi}].disks[${di}]`;
    if (
      vm.image.kind === 'volume' &&
      vm.image.clone &&
      vm.image.pool === pool &&
      vmVolumeName(vm.name, 'root') === volume
    )
      return `vms[${vi}].image`;
  }
  return undefined;
}

/** The size the spec sets for volume `pool/volume` (its own `sizeMiB` or its disk's), if it sets one. */
export function specSizeMiB(spec: Spec | undefined, pool: string, volume: string): number | undefined {
  const v = spec?.volumes.find((x) => x.pool === pool && x.name === volume);
  if (v) return v.sizeMiB;
  for (const vm of spec?.vms ?? [])
    for (const d of vm.disks)
      if (d.pool === pool && !d.volume && vmVolumeName(vm.name, d.name) === volume) return d.sizeMiB;
  return undefined;
}

/** `GET /v1/volumes[?pool=]`. */
export function volumeViews(spec: Spec | undefined, reports: HostReports, pool?: string): VolumeView[] {
  return poolPlaces(spec, reports)
    .filter((p) => pool === undefined || p.name === pool)
    .flatMap((place) =>
      (observedPool(reports, place)?.volumes ?? []).map((v): VolumeView => {
        const at = declaredAt(spec, place.name, v.name);
        return {
          pool: place.name,
          name: v.name,
          host: place.host,
          format: v.format,
          sizeMiB: v.sizeMiB,
          allocatedMiB: v.allocatedMiB,
          encrypted: v.encrypted,
          ...(v.backingVolume ? { backingVolume: v.backingVolume } : {}),
          snapshots: v.snapshots.length,
          usedBy: volumeUsers(spec, reports, place.name, v.name).map(({ vm, disk, running }) => ({
            vm,
            disk,
            running,
          })),
          ...(at ? { declaredAt: at } : {}),
        };
      }),
    );
}

/**
 * Volumes the spec puts in `pool`, with their size and backup copies: `volumes:` entries (a clone's size is its
 * source's when it sets none) and `{pool, sizeMiB}` disks; a `{pool, volume}` disk adds its backup copies to the
 * volume's (the larger count wins: both describe copies of the same data).
 */
function specVolumes(spec: Spec, pool: string, observed: ObservedPool | undefined) {
  const out = new Map<string, { sizeMiB: number; backupCopies: number }>();
  const seenSize = (name: string) => observed?.volumes.find((v) => v.name === name)?.sizeMiB;
  const sizeOf = (name: string, depth = 0): number => {
    const v = spec.volumes.find((x) => x.pool === pool && x.name === name);
    if (v?.sizeMiB !== undefined) return v.sizeMiB;
    if (v?.from && depth < 16) return sizeOf(v.from.volume, depth + 1);
    return seenSize(name) ?? 0;
  };
  for (const v of spec.volumes)
    if (v.pool === pool) out.set(v.name, { sizeMiB: sizeOf(v.name), backupCopies: v.backupCopies });
  for (const vm of spec.vms)
    for (const d of vm.disks) {
      if (d.pool !== pool) continue;
      const name = d.volume ?? vmVolumeName(vm.name, d.name);
      const cur = out.get(name);
      out.set(name, {
        sizeMiB: cur?.sizeMiB ?? d.sizeMiB ?? sizeOf(name),
        backupCopies: Math.max(cur?.backupCopies ?? 0, d.backupCopies),
      });
    }
  return out;
}

/** `GET /v1/capacity`: per pool of the applied spec, used, provisioned, backup, reserve and the projected need. */
export function capacityReport(spec: Spec | undefined, reports: HostReports): CapacityReport {
  const pools = (spec?.pools ?? []).map((p): CapacityReport['pools'][number] => {
    const place = { name: p.name, type: p.type, host: p.host };
    const seen = observedPool(reports, place);
    const declared = spec ? specVolumes(spec, p.name, seen) : new Map();
    // Provisioned: what exists (at its real size) and what the spec declares but is not made yet.
    const sizes = new Map<string, number>();
    for (const v of seen?.volumes ?? []) sizes.set(v.name, v.sizeMiB);
    for (const [name, d] of declared) if (!sizes.has(name)) sizes.set(name, d.sizeMiB);
    const provisionedMiB = sum([...sizes.values()]);
    const backupMiB = sum([...declared].map(([name, d]) => (sizes.get(name) ?? d.sizeMiB) * d.backupCopies));
    const need = projectedNeedMiB(provisionedMiB, backupMiB, p.reserveMiB);
    const warnings: string[] = [];
    const base = {
      pool: p.name,
      type: p.type,
      host: p.host,
      provisionedMiB,
      backupMiB,
      reserveMiB: p.reserveMiB,
      projectedNeedMiB: need,
      ...(p.maxOvercommit === undefined ? {} : { maxOvercommit: p.maxOvercommit }),
    };
    if (!seen) {
      const error = errorOf(reports, p.host) ?? `pool ${p.name} is not realised on ${p.host} yet (apply)`;
      return { ...base, warnings, error };
    }
    // As df counts it: blocks reserved for root (or otherwise not available) are neither used nor free.
    const usable = seen.usedMiB + seen.freeMiB;
    const usedRatio = usable > 0 ? seen.usedMiB / usable : undefined;
    const overcommit = seen.capacityMiB > 0 ? provisionedMiB / seen.capacityMiB : undefined;
    if (usedRatio !== undefined && usedRatio > CAPACITY_WARN_RATIO)
      warnings.push(
        `${pct(usedRatio)} of its filesystem is used (above ${pct(CAPACITY_WARN_RATIO)}): free space or grow ${seen.capacityMiB} MiB`,
      );
    if (need > seen.capacityMiB)
      warnings.push(
        `projected need ${need} MiB exceeds its capacity ${seen.capacityMiB} MiB: add space or move volumes`,
      );
    if (overcommit !== undefined && p.maxOvercommit !== undefined && overcommit > p.maxOvercommit)
      warnings.push(
        `provisioned ${provisionedMiB} MiB is ${round(overcommit)}× its capacity, over maxOvercommit ${p.maxOvercommit}`,
      );
    return {
      ...base,
      capacityMiB: seen.capacityMiB,
      usedMiB: seen.usedMiB,
      freeMiB: seen.freeMiB,
      ...(usedRatio === undefined ? {} : { usedRatio: round(usedRatio) }),
      ...(overcommit === undefined ? {} : { overcommit: round(overcommit) }),
      warnings,
    };
  });
  return { warnRatio: CAPACITY_WARN_RATIO, pools };
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const round = (x: number) => Math.round(x * 1000) / 1000;
const pct = (x: number) => `${Math.round(x * 100)} %`;
