// The storage backend interface: volumes a VM's disks live on. One backend per kind of storage (`dir`
// today; iSCSI and NFS later), picked by name from registry.ts; every backend passes conformance.ts.
import type { ObservedPool, PoolConfig, PoolFeatures, PoolType, VolumeConfig } from '../../shared/storage.js';
import type { SecretValues } from '../hypervisor/types.js';
import type { OpContext } from '../network/types.js';

/** A volume request: a qcow2 volume named `name` in `dir`. */
export interface VolumeRef {
  name: string;
  /** Directory that holds the volume (a VM's directory, or a pool's). */
  dir: string;
}

/** Who may use a volume: QEMU runs unprivileged and must read and write its disks. */
export interface VolumeOwner {
  uid: number;
  gid: number;
}

/** A new empty volume of `sizeMiB`. */
export interface VolumeSpec extends VolumeRef {
  sizeMiB: number;
  owner?: VolumeOwner;
  /** A LUKS-encrypted qcow2 with this key (base64); the backend hands it to qemu-img on stdin, never in argv. */
  encryptionKeyBase64?: string;
}

/** A new volume holding a copy of the image at `source` (its format: `qcow2` or `raw`). */
export interface CopySpec extends VolumeRef {
  source: string;
  sourceFormat: 'qcow2' | 'raw';
  owner?: VolumeOwner;
}

/** A new copy-on-write overlay on the image at `base` (qcow2 or raw). */
export interface OverlaySpec extends VolumeRef {
  base: string;
  owner?: VolumeOwner;
}

/** A storage backend on one host. */
export interface StorageDriver {
  // Volumes.
  /** Where a volume is (or would be), as QEMU opens it: a path or a URL; refuses a name the backend cannot use. */
  volumePath(v: VolumeRef): string;
  /** Creates an empty qcow2 volume of `sizeMiB` and returns its path; an existing volume is kept as it is. */
  createVolume(v: VolumeSpec, ctx?: OpContext): Promise<string>;
  /** Removes a volume; a missing volume is not an error. */
  deleteVolume(v: VolumeRef, ctx?: OpContext): Promise<void>;
  /**
   * Copies the image `v.source` (not in use) into a new qcow2 volume and returns its path: flattened (its backing
   * chain read through), its persistent dirty bitmaps kept, published whole or not at all. Refuses an existing
   * volume (`ConflictError`): a copy never overwrites.
   */
  copyVolume(v: CopySpec, ctx?: OpContext): Promise<string>;

  // Images.
  /** Creates a qcow2 copy-on-write overlay on `base` and returns its path; an existing overlay is kept. */
  createOverlay(v: OverlaySpec, ctx?: OpContext): Promise<string>;
}

/**
 * A pool backend (issue 10): pools of one type on the host that holds them (`dir` on a compute host, `iscsi` and
 * `nfs` on a storage host). VMs never go through it: their hosts open volumes with QEMU's own block drivers from
 * a `DiskSource`. Every backend passes `conformance-pools.ts`, which checks each feature it declares.
 */
export interface PoolBackend {
  readonly type: PoolType;
  /** What it supports; `POOL_FEATURES[type]`. Methods of a feature it lacks throw `UnsupportedError`. */
  readonly features: PoolFeatures;

  // Pool.
  /**
   * Creates the pool or brings it in line with `pool` (directory, tgtd account and ACL, ganesha export); idempotent.
   * `secrets` carries the CHAP password of an iscsi pool.
   */
  ensurePool(pool: PoolConfig, configHash: string, ctx?: OpContext, secrets?: SecretValues): Promise<void>;
  /** Removes an empty pool (its directory too); `ConflictError` naming its volumes while it has any. */
  deletePool(pool: PoolConfig, ctx?: OpContext): Promise<void>;
  /** The pools of this type realised on this host, with their volumes, usage and problems. */
  listPools(): Promise<ObservedPool[]>;

  // Volumes.
  /** Creates a volume unless it exists (an existing one is kept as it is); `secrets`: an encrypted volume's key. */
  createVolume(
    pool: PoolConfig,
    volume: VolumeConfig,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void>;
  /**
   * Grows a volume to `sizeMiB`; a shrink is an `InvalidRequestError` and changes nothing. `secrets`: an encrypted
   * volume's key (qemu-img must open it to grow it).
   */
  resizeVolume(
    pool: PoolConfig,
    name: string,
    sizeMiB: number,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void>;
  /** Removes a volume; a missing one is fine; `ConflictError` when linked clones still use it. */
  deleteVolume(pool: PoolConfig, name: string, ctx?: OpContext): Promise<void>;
  /** A new volume `name` from a file on this host (qcow2, raw or ISO), converted to the pool's format. */
  importVolume(pool: PoolConfig, name: string, sourcePath: string, ctx?: OpContext): Promise<void>;

  // Snapshots (of a volume no running VM has open; a running VM's go through QMP on its host). `secrets`: an
  // encrypted volume's key (qemu-img must open it). Creating one that exists is a `ConflictError`, rolling back to a
  // missing one a `NotFoundError`; deleting a missing one is fine.
  createSnapshot(
    pool: PoolConfig,
    volume: string,
    snapshot: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void>;
  rollbackSnapshot(
    pool: PoolConfig,
    volume: string,
    snapshot: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void>;
  deleteSnapshot(
    pool: PoolConfig,
    volume: string,
    snapshot: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void>;

  // Fencing (only where `features.fence`: iscsi-fence.ts).
  /**
   * Lets only `owner.address` open `volume` and drops every other client of it; a token older than the newest seen
   * for the volume is a `FencedError` and changes nothing; the same token for the same owner is idempotent.
   */
  fenceVolume?(pool: PoolConfig, volume: string, owner: FenceOwner, ctx?: OpContext): Promise<void>;
}

/** The owner a volume is fenced to (`volume.fence`): its host, that host's address, and its fencing token. */
export interface FenceOwner {
  host: string;
  /** The owner host's underlay IPv4 address: the only client address the volume then lets in. */
  address: string;
  /** The owner record's fencing token (decimal store version, shared/cluster.ts). */
  token: string;
  /**
   * A live migration's target host, let in beside the owner until the move ends (the source and the target both have
   * the LUN open while the VM's state streams); absent: the owner alone.
   */
  peer?: { host: string; address: string };
}
