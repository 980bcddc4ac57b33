// Where pools and volumes live and what a VM disk refers to: pure readings of the spec shared by validation
// (./validate/storage.ts) and resolution (../plan/storage.ts), so both read defaults the same way.
import {
  POOL_FEATURE_REASONS,
  POOL_FEATURES,
  type PoolFeatures,
  type PoolType,
  type VolumeFormat,
  vmVolumeName,
} from '../shared/storage.js';
import type { DiskSpec, ImageSpec, PoolSpec, Spec, VmSpec } from './schema.js';
import { hostAddress } from './topology.js';

/** Why pools of `type` cannot do `feature`, for a refusal (`iscsi pools cannot ...: reason`). */
export function featureRefusal(type: PoolType, feature: keyof PoolFeatures, what: string): string {
  const why = POOL_FEATURE_REASONS[type]?.[feature];
  return `${type} pools cannot ${what}${why ? `: ${why}` : ''}`;
}

/** Whether pools of `type` can do `feature`. */
export const poolCan = (type: PoolType, feature: keyof PoolFeatures): boolean => POOL_FEATURES[type][feature];

/** Format of the volumes a pool makes: raw LUN files behind tgtd, qcow2 elsewhere. */
export function poolVolumeFormat(type: PoolType): VolumeFormat {
  return type === 'iscsi' ? 'raw' : 'qcow2';
}

/**
 * What a VM disk is: a qcow2 in the VM's directory (`vmdir`), a volume made for the VM (`made`, `<vm>-<disk>`,
 * deleted with the VM), or a volume it names (`named`: one of `volumes:` or an imported image).
 */
export type DiskRef =
  | { kind: 'vmdir' }
  | { kind: 'made'; pool: string; volume: string }
  | { kind: 'named'; pool: string; volume: string };

/** Reads a disk's form (validation checks that the combination of fields is one of the three). */
export function diskRef(vm: string, d: DiskSpec): DiskRef {
  if (d.pool === undefined) return { kind: 'vmdir' };
  if (d.volume !== undefined) return { kind: 'named', pool: d.pool, volume: d.volume };
  return { kind: 'made', pool: d.pool, volume: vmVolumeName(vm, d.name) };
}

/** Name of a VM's own linked clone of its template (image kind `volume` with `clone`): `<vm>-root`. */
export function cloneRootName(vm: string): string {
  return vmVolumeName(vm, 'root');
}

/** The volume a VM boots from: the template itself or its clone `<vm>-root`; undefined for other images. */
export function rootVolume(vm: {
  name: string;
  image: ImageSpec;
}): { pool: string; volume: string } | undefined {
  const img = vm.image;
  if (img.kind !== 'volume') return undefined;
  return { pool: img.pool, volume: img.clone ? cloneRootName(vm.name) : img.volume };
}

/**
 * The size of a volume of `volumes:`: its `sizeMiB`, else its template's (through `from` chains); undefined when
 * no size is known from the spec (a clone of an imported image: the plan takes the observed one).
 */
export function specVolumeSize(spec: Spec, pool: string, name: string): number | undefined {
  const seen = new Set<string>();
  let cur = spec.volumes.find((v) => v.pool === pool && v.name === name);
  while (cur && !seen.has(cur.name)) {
    if (cur.sizeMiB !== undefined) return cur.sizeMiB;
    seen.add(cur.name);
    const from = cur.from?.volume;
    cur = from === undefined ? undefined : spec.volumes.find((v) => v.pool === pool && v.name === from);
  }
  return undefined;
}

/** The key of a volume of `volumes:`: its own, else its template's (a clone keeps its template's encryption). */
export function specVolumeEncryption(spec: Spec, pool: string, name: string): { secret: string } | undefined {
  const seen = new Set<string>();
  let cur = spec.volumes.find((v) => v.pool === pool && v.name === name);
  while (cur && !seen.has(cur.name)) {
    if (cur.encryption) return { secret: cur.encryption.secret };
    seen.add(cur.name);
    const from = cur.from?.volume;
    cur = from === undefined ? undefined : spec.volumes.find((v) => v.pool === pool && v.name === from);
  }
  return undefined;
}

/** Number of a lab storage machine's own tgtd control port (`tgtadm -C N`): its index in `lab.storage` + 1. */
export function labTgtControlPort(storageIndex: number): number {
  return storageIndex + 1;
}

/** The tgtd control port an iscsi pool's host serves it with: its lab machine's, else 0 (the host's own tgtd). */
export function tgtControlPortOf(spec: Spec, host: string): number {
  const i = spec.lab?.storage.findIndex((m) => m.name === host) ?? -1;
  return i >= 0 ? labTgtControlPort(i) : 0;
}

/** The address VM hosts reach an iscsi or nfs pool at: `pools[].address`, else its host's address. */
export function poolAddress(spec: Spec, pool: PoolSpec): string | undefined {
  if (pool.address !== undefined) return pool.address;
  const host = spec.hosts.find((h) => h.name === pool.host);
  return host ? hostAddress(spec, host) : undefined;
}

/** Every volume a VM uses, with the spec path that names it: its disks from pools and the volume it boots from. */
export function vmVolumeUses(
  vm: VmSpec,
  vi: number,
): Array<{
  pool: string;
  volume: string;
  path: string;
  kind: 'made' | 'named' | 'root' | 'template';
  disk?: DiskSpec;
}> {
  const out: ReturnType<typeof vmVolumeUses> = [];
  vm.disks.forEach((d, j) => {
    const ref = diskRef(vm.name, d);
    if (ref.kind !== 'vmdir')
      out.push({
        pool: ref.pool,
        volume: ref.volume,
        path: `vms[${vi}].disks[${j}]`,
        kind: ref.kind,
        disk: d,
      });
  });
  const img = vm.image;
  if (img.kind === 'volume') {
    if (img.clone) {
      out.push({ pool: img.pool, volume: img.volume, path: `vms[${vi}].image`, kind: 'template' });
      out.push({ pool: img.pool, volume: cloneRootName(vm.name), path: `vms[${vi}].image`, kind: 'made' });
    } else out.push({ pool: img.pool, volume: img.volume, path: `vms[${vi}].image`, kind: 'root' });
  }
  return out;
}
