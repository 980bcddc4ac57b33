// Resolution of storage: pools and volumes per host, and how each VM opens its pool disks and boot volume.
import type { DiskConfig, VmConfig } from '../shared/model.js';
import {
  type DiskSource,
  defaultPoolPath,
  ISCSI_PORT,
  ISCSI_VOLUME_LUN,
  iscsiTargetName,
  nfsExportId,
  nfsPseudoPath,
  type PoolConfig,
  type VolumeConfig,
  type VolumeFormat,
  volumeFileName,
} from '../shared/storage.js';
import type { DiskSpec, PoolSpec, Spec, VmSpec } from '../spec/schema.js';
import {
  cloneRootName,
  diskRef,
  poolAddress,
  poolVolumeFormat,
  specVolumeEncryption,
  specVolumeSize,
  tgtControlPortOf,
} from '../spec/storage.js';

/** A volume a host must hold, with where the spec asks for it. */
export interface DesiredVolume {
  config: VolumeConfig;
  /** The spec path that declares it (`volumes[2]`, `vms[0].disks[1]`, `vms[0].image`): refusals name it. */
  path: string;
  /** A volume made for this VM (`{ pool, sizeMiB }` disk or its `<vm>-root` clone): deleted with the VM. */
  madeFor?: string;
  /**
   * The size is a floor rather than known: a clone of a volume the spec does not size (an imported template) is
   * made at its template's observed size, and never counted as a shrink.
   */
  sizeFromTemplate?: true;
  /**
   * A `scale` action of an alert rule grows it up to this size (docs/observability.md): a volume grown so far is not
   * a shrink for the next plan (the spec's size is where it starts).
   */
  scaleMaxMiB?: number;
}

/** What one host holds of storage. */
export interface HostStorage {
  pools: PoolConfig[];
  volumes: DesiredVolume[];
  /** The spec path of each of its pools (`pools[2]`), by name: refusals name it. */
  poolPaths: Record<string, string>;
}

/** A pool as its host's agent realises it: defaults filled in, the nfs export and tgtd port derived. */
export function resolvePool(spec: Spec, p: PoolSpec): PoolConfig {
  const cfg: PoolConfig = { name: p.name, type: p.type, path: p.path ?? defaultPoolPath(p.name) };
  if (p.clients?.length) cfg.clients = [...p.clients];
  if (p.type === 'iscsi') {
    if (p.chap) cfg.chap = { user: p.chap.user, secret: p.chap.secret };
    cfg.iscsi = { tgtControlPort: tgtControlPortOf(spec, p.host) };
  }
  if (p.type === 'nfs') cfg.nfs = { exportId: nfsExportId(p.name), pseudoPath: nfsPseudoPath(p.name) };
  return cfg;
}

/** How a VM's host opens `volume` of `pool`: a file, an iSCSI LUN with the pool's CHAP, or a file on NFS. */
export function diskSource(spec: Spec, pool: PoolSpec, volume: string, format: VolumeFormat): DiskSource {
  const address = poolAddress(spec, pool);
  if (pool.type === 'dir')
    return {
      kind: 'file',
      pool: pool.name,
      volume,
      path: `${pool.path ?? defaultPoolPath(pool.name)}/${volumeFileName(volume, format)}`,
      format,
    };
  if (address === undefined) throw new Error(`pool ${pool.name}: no address (validate the spec first)`);
  if (pool.type === 'iscsi')
    return {
      kind: 'iscsi',
      pool: pool.name,
      volume,
      portal: `${address}:${ISCSI_PORT}`,
      iqn: iscsiTargetName(pool.host, pool.name, volume),
      lun: ISCSI_VOLUME_LUN,
      // The secret's name only: its value reaches the VM's host with the step, never the plan.
      ...(pool.chap ? { chap: { user: pool.chap.user, secret: pool.chap.secret } } : {}),
    };
  return {
    kind: 'nfs',
    pool: pool.name,
    volume,
    server: address,
    export: nfsPseudoPath(pool.name),
    file: volumeFileName(volume, format),
    format,
  };
}

const poolOf = (spec: Spec, name: string): PoolSpec => {
  const p = spec.pools.find((x) => x.name === name);
  if (!p) throw new Error(`unknown pool ${name} (validate the spec first)`);
  return p;
};

/** Format of a volume a VM names: an imported ISO in a CD-ROM, else its pool's. */
function namedFormat(pool: PoolSpec, d: DiskSpec | undefined): VolumeFormat {
  return d?.media === 'cdrom' ? 'iso' : poolVolumeFormat(pool.type);
}

/**
 * One VM disk as its host realises it. A disk in the VM's directory keeps exactly the fields it had before pools
 * (its config hash must not change); pool disks get their source, a CD-ROM is always read-only.
 */
export function resolveDisk(spec: Spec, vm: VmSpec, d: DiskSpec): DiskConfig {
  const ref = diskRef(vm.name, d);
  const extra: Partial<DiskConfig> = {
    ...(d.media === 'cdrom' ? { media: 'cdrom' as const, readOnly: true as const } : {}),
    ...(d.readOnly ? { readOnly: true as const } : {}),
  };
  if (ref.kind === 'vmdir')
    return {
      name: d.name,
      sizeMiB: d.sizeMiB,
      // The secret's name only: its value reaches the host with the step that needs it, never the plan.
      ...(d.encryption ? { encryption: { secret: d.encryption.secret } } : {}),
      ...extra,
    };
  const pool = poolOf(spec, ref.pool);
  if (ref.kind === 'made')
    return {
      name: d.name,
      sizeMiB: d.sizeMiB,
      ...(d.encryption ? { encryption: { secret: d.encryption.secret } } : {}),
      source: diskSource(spec, pool, ref.volume, poolVolumeFormat(pool.type)),
      ...extra,
    };
  // A named volume: its size and key are the volume's own (QEMU needs the key's name to open it).
  const key = specVolumeEncryption(spec, ref.pool, ref.volume);
  return {
    name: d.name,
    ...(key ? { encryption: key } : {}),
    source: diskSource(spec, pool, ref.volume, namedFormat(pool, d)),
    ...extra,
  };
}

/** The storage fields of a VM's config: its boot volume's source and its passthrough devices, where it has them. */
export function vmStorageFields(spec: Spec, vm: VmSpec): Pick<VmConfig, 'rootSource' | 'devices'> {
  const out: Pick<VmConfig, 'rootSource' | 'devices'> = {};
  const img = vm.image;
  if (img.kind === 'volume') {
    const pool = poolOf(spec, img.pool);
    const volume = img.clone ? cloneRootName(vm.name) : img.volume;
    out.rootSource = diskSource(spec, pool, volume, poolVolumeFormat(pool.type));
  }
  if (vm.devices.length) out.devices = vm.devices.map((d) => ({ ...d }));
  return out;
}

/** Pools and volumes of every spec host (every host gets an entry, empty where it holds none). */
export function resolveStorage(spec: Spec): Record<string, HostStorage> {
  const out: Record<string, HostStorage> = {};
  for (const h of spec.hosts) out[h.name] = { pools: [], volumes: [], poolPaths: {} };
  const hostOf = new Map(spec.pools.map((p) => [p.name, p.host] as const));
  // Volumes alert rules may grow, with the largest size they may reach.
  const scaled = new Map<string, number>();
  for (const r of spec.alerts)
    for (const a of r.actions)
      if (a.type === 'scale') scaled.set(a.volume, Math.max(scaled.get(a.volume) ?? 0, a.maxMiB));
  const add = (pool: string, v: DesiredVolume) => {
    const host = hostOf.get(pool);
    const max = scaled.get(`${pool}/${v.config.name}`);
    if (host !== undefined) out[host]?.volumes.push(max === undefined ? v : { ...v, scaleMaxMiB: max });
  };
  spec.pools.forEach((p, i) => {
    const host = out[p.host];
    if (!host) return;
    host.pools.push(resolvePool(spec, p));
    host.poolPaths[p.name] = `pools[${i}]`;
  });
  spec.volumes.forEach((v, i) => {
    const pool = poolOf(spec, v.pool);
    const size = specVolumeSize(spec, v.pool, v.name);
    const key = specVolumeEncryption(spec, v.pool, v.name);
    add(v.pool, {
      config: {
        pool: v.pool,
        name: v.name,
        sizeMiB: size ?? 1,
        format: poolVolumeFormat(pool.type),
        ...(v.from ? { from: { volume: v.from.volume, linked: v.from.linked } } : {}),
        // A clone is keyed like its template (its backing chain is read with that key).
        ...(key ? { encryption: key } : {}),
      },
      path: `volumes[${i}]`,
      ...(size === undefined ? { sizeFromTemplate: true as const } : {}),
    });
  });
  spec.vms.forEach((vm, vi) => {
    vm.disks.forEach((d, j) => {
      const ref = diskRef(vm.name, d);
      if (ref.kind !== 'made' || d.sizeMiB === undefined) return;
      const pool = poolOf(spec, ref.pool);
      add(ref.pool, {
        config: {
          pool: ref.pool,
          name: ref.volume,
          sizeMiB: d.sizeMiB,
          format: poolVolumeFormat(pool.type),
          ...(d.encryption ? { encryption: { secret: d.encryption.secret } } : {}),
        },
        path: `vms[${vi}].disks[${j}]`,
        madeFor: vm.name,
      });
    });
    const img = vm.image;
    if (img.kind === 'volume' && img.clone) {
      const pool = poolOf(spec, img.pool);
      const size = specVolumeSize(spec, img.pool, img.volume);
      add(img.pool, {
        config: {
          pool: img.pool,
          name: cloneRootName(vm.name),
          sizeMiB: size ?? 1,
          format: poolVolumeFormat(pool.type),
          from: { volume: img.volume, linked: true },
        },
        path: `vms[${vi}].image`,
        madeFor: vm.name,
        ...(size === undefined ? { sizeFromTemplate: true as const } : {}),
      });
    }
  });
  return out;
}
