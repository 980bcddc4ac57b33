// The storage backend interface: volumes a VM's disks live on. One backend per kind of storage (`dir`
// today; iSCSI and NFS later), picked by name from registry.ts; every backend passes conformance.ts.
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

  // Images.
  /** Creates a qcow2 copy-on-write overlay on `base` and returns its path; an existing overlay is kept. */
  createOverlay(v: OverlaySpec, ctx?: OpContext): Promise<string>;
}
