import type { OpContext } from '../network/types.js';

/** A volume request: a qcow2 file named `name` in `dir`. */
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

/** A storage backend on one host (`dir` now; iSCSI and NFS later). */
export interface StorageDriver {
  // Volumes.
  /** Creates an empty qcow2 volume of `sizeMiB` and returns its path; an existing volume is kept as it is. */
  createVolume(v: VolumeRef & { sizeMiB: number; owner?: VolumeOwner }, ctx?: OpContext): Promise<string>;
  /** Creates a qcow2 copy-on-write overlay on `base` and returns its path; an existing overlay is kept. */
  createOverlay(v: VolumeRef & { base: string; owner?: VolumeOwner }, ctx?: OpContext): Promise<string>;
  /** Removes a volume; a missing volume is not an error. */
  deleteVolume(v: VolumeRef, ctx?: OpContext): Promise<void>;
  /** Path a volume has (or would have). */
  volumePath(v: VolumeRef): string;
}
