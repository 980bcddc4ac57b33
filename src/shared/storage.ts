// Storage pools and volumes (issue 10): the resolved shapes shared by spec, plan, wire, agent and storage backends.
//
// Model:
// - A pool lives on one host: a `dir` pool on a compute host (qcow2 files in a directory); an `iscsi` or `nfs` pool
//   on a storage host (`hosts[].role: storage`), whose agent realises it with tgtd (one target per volume, CHAP
//   bound) or nfs-ganesha (one export per pool, qcow2 files in it).
// - A volume lives in one pool. VMs on compute hosts open it directly with QEMU's own block drivers: a file (passed
//   as a descriptor), `iscsi` (libiscsi, CHAP through a secret object) or `nfs` (libnfs, NFSv3); no kernel initiator.
// - Volumes named in the spec's `volumes:` are never deleted by apply (removing one from the spec keeps its data);
//   a VM disk given as `{ pool, sizeMiB }` gets a volume `<vm>-<disk>` that is deleted with the VM.
// - What a backend cannot do (POOL_FEATURES) is refused at plan time with the reason.

/** Kinds of pool, one backend each (`drivers/storage/registry.ts`). */
export const PoolTypes = ['dir', 'iscsi', 'nfs'] as const;
/** One of `PoolTypes`. */
export type PoolType = (typeof PoolTypes)[number];

/** Optional abilities of a pool backend; the conformance suite checks each one a backend declares. */
export interface PoolFeatures {
  /** Named snapshots of a volume (qcow2 internal snapshots), rollback and delete. */
  snapshots: boolean;
  /** Growing a volume attached to a running VM (QMP `block_resize`). */
  onlineResize: boolean;
  /** Linked clones (a qcow2 overlay on a template volume) as well as full copies. */
  linkedClones: boolean;
  /** LUKS-encrypted volumes (qcow2 `encrypt.format=luks`). */
  encryption: boolean;
  /**
   * Storage-side fencing (`volume.fence`, docs/ha.md): the target lets only the VM owner's host in, drops every
   * other initiator, and refuses a fencing token older than the newest it has seen.
   */
  fence: boolean;
}

/**
 * What each backend supports, and why not where it does not. `iscsi` LUNs are raw files behind tgtd: no qcow2
 * features, and tgtd cannot grow a LUN under an open session.
 */
export const POOL_FEATURES: Record<PoolType, PoolFeatures> = {
  dir: { snapshots: true, onlineResize: true, linkedClones: true, encryption: true, fence: false },
  iscsi: { snapshots: false, onlineResize: false, linkedClones: false, encryption: false, fence: true },
  nfs: { snapshots: true, onlineResize: true, linkedClones: true, encryption: true, fence: false },
};

/** Why a backend lacks a feature (plan-time refusals quote it). */
export const POOL_FEATURE_REASONS: Partial<Record<PoolType, Partial<Record<keyof PoolFeatures, string>>>> = {
  iscsi: {
    snapshots: 'iSCSI LUNs are raw: snapshots need qcow2 (use a dir or nfs pool)',
    onlineResize: 'tgtd cannot grow a LUN while a VM has it open: stop the VM first',
    linkedClones: 'iSCSI LUNs are raw: linked clones need qcow2 (a full clone works)',
    encryption: 'iSCSI LUNs are raw: LUKS volumes need qcow2 (use a dir or nfs pool)',
  },
  nfs: {
    fence:
      "an nfs pool is one ganesha export whose client list covers every volume file in it, and NFSv3 has no session a server could drop: it cannot let one host in for one volume only (the owner check on the VM's host and its self-fencing protect these volumes)",
  },
  dir: {
    fence:
      "a dir pool's volumes are files on the host that runs the VM: no other host can open them, so there is nothing to fence at the storage end",
  },
};

/** Format of a volume's image. */
export type VolumeFormat = 'qcow2' | 'raw' | 'iso';

/** Most pools a spec may declare. */
export const POOLS_MAX = 64;
/** Most volumes a spec may declare. */
export const VOLUMES_MAX = 1_024;
/** Most volumes one pool may hold (a host reports them all). */
export const POOL_VOLUMES_MAX = 4_096;
/** Most snapshots one volume may hold. */
export const VOLUME_SNAPSHOTS_MAX = 64;
/** Most client networks a pool may restrict access to. */
export const POOL_CLIENTS_MAX = 32;
/** Most passthrough devices one VM may have. */
export const VM_DEVICES_MAX = 8;
/** TCP port of an iSCSI portal. */
export const ISCSI_PORT = 3260;
/** TCP port of an NFS server (and 111 for its portmapper, which NFSv3 clients ask first). */
export const NFS_PORT = 2049;
/** TCP port of the portmapper (rpcbind). */
export const RPCBIND_PORT = 111;

/** A pool as its host's agent realises it. */
export interface PoolConfig {
  name: string;
  type: PoolType;
  /**
   * Directory on the pool's host that holds its volumes' files (qcow2, or raw LUN backing files; an nfs pool's
   * export root). Default `/var/lib/vmlink/pools/<name>`.
   */
  path: string;
  /** Networks allowed to reach the pool (iSCSI initiator addresses, NFS clients); absent: any. */
  clients?: string[];
  /** iSCSI: CHAP that initiators must pass; the secret is named, its value comes with the step. */
  chap?: { user: string; secret: string };
  /** nfs: the export's pseudo path (`nfsPseudoPath`) and id (`nfsExportId`: stable, unique per storage host). */
  nfs?: { exportId: number; pseudoPath: string };
  /**
   * iscsi: the control socket number of the tgtd serving it (`tgtadm -C N`): 0 for the host's own tgtd; the lab
   * runs one tgtd per storage machine, each with its own number.
   */
  iscsi?: { tgtControlPort: number };
}

/** A volume as its pool's backend creates it. */
export interface VolumeConfig {
  pool: string;
  name: string;
  sizeMiB: number;
  /** qcow2 in dir and nfs pools, raw in iscsi ones (iso only by image import). */
  format: VolumeFormat;
  /** Created as a copy of this volume of the same pool: a linked clone (qcow2 overlay) or a full copy. */
  from?: { volume: string; linked: boolean };
  /** LUKS-encrypted qcow2 keyed by this controller-kept secret (its value comes with the step). */
  encryption?: { secret: string };
}

/** How a VM's host opens a volume: what QEMU's block layer needs, never a secret value. */
export type DiskSource =
  /** A file on the VM's own host (a dir pool): root opens it and passes the descriptor. */
  | { kind: 'file'; pool: string; volume: string; path: string; format: VolumeFormat }
  /** An iSCSI LUN: `iscsi://portal/iqn/lun`, with CHAP whose password is the named secret. */
  | {
      kind: 'iscsi';
      pool: string;
      volume: string;
      /** `address:port`. */
      portal: string;
      iqn: string;
      lun: number;
      chap?: { user: string; secret: string };
    }
  /** A file on an NFS export: `nfs://server/export/file` (NFSv3). */
  | {
      kind: 'nfs';
      pool: string;
      volume: string;
      server: string;
      /** The export's path on the server (its pseudo path). */
      export: string;
      /** File name inside the export. */
      file: string;
      format: VolumeFormat;
    };

/** One snapshot of a volume (qcow2 internal snapshot) or of a whole VM. */
export interface ObservedSnapshot {
  name: string;
  /** ISO 8601. */
  createdAt: string;
  /** Bytes of RAM and device state saved with it (`vm snapshot --memory`); absent: disks only. */
  vmStateBytes?: number;
}

/** A volume as its pool's host observes it. */
export interface ObservedVolume {
  name: string;
  format: VolumeFormat;
  /** Virtual size. */
  sizeMiB: number;
  /** Space it takes on the pool's storage now (thin volumes take less than their size). */
  allocatedMiB: number;
  encrypted: boolean;
  /** The volume it is a linked clone of. */
  backingVolume?: string;
  snapshots: ObservedSnapshot[];
  /** iscsi: the initiators logged in to its target now, with their addresses (drills: "no disk with two writers"). */
  sessions?: VolumeSession[];
  /** iscsi: the owner its target is fenced to (`volume.fence`), with the newest token the storage host has seen. */
  fence?: VolumeFence;
}

/** An initiator logged in to a volume's iSCSI target. */
export interface VolumeSession {
  initiator: string;
  addresses: string[];
}

/** Whom a volume is fenced to: the VM owner's host, its address (the only one the target lets in) and token. */
export interface VolumeFence {
  host: string;
  address: string;
  /** The newest fencing token seen for the volume (decimal; see shared/cluster.ts). */
  token: string;
  /** When it was fenced to this owner (ISO). */
  at: string;
  /** A live migration's target, let in beside the owner while the VM's state streams to it (both open the LUN). */
  peer?: { host: string; address: string };
}

/** Most sessions one volume's report lists (one per host that has it open; more is a problem to see, not list). */
export const VOLUME_SESSIONS_MAX = 64;

/** A pool as its host observes it. */
export interface ObservedPool {
  name: string;
  type: PoolType;
  /** Hash of the PoolConfig it was realised from. */
  configHash: string;
  /** Problems seen (tgtd not running, export missing, directory gone): the plan repairs a pool that has any. */
  problems: string[];
  config?: PoolConfig;
  /** Size of the filesystem holding the pool, and what is used and free there. */
  capacityMiB: number;
  usedMiB: number;
  freeMiB: number;
  volumes: ObservedVolume[];
}

/** The iSCSI target name of a volume: one target per volume, LUN 1. */
export function iscsiTargetName(storageHost: string, pool: string, volume: string): string {
  return `iqn.2026-12.io.vmlink:${storageHost}.${pool}.${volume}`;
}

/** LUN number of a volume in its target (LUN 0 is the target's controller). */
export const ISCSI_VOLUME_LUN = 1;

/** File name of a volume in its pool's directory (and in an nfs pool's export). */
export function volumeFileName(volume: string, format: VolumeFormat): string {
  return `${volume}.${format === 'raw' ? 'img' : format}`;
}

/** Default directory of a pool on its host. */
export function defaultPoolPath(pool: string): string {
  return `/var/lib/vmlink/pools/${pool}`;
}

/** An nfs pool's pseudo path on its server. */
export function nfsPseudoPath(pool: string): string {
  return `/vmlink/${pool}`;
}

/**
 * An nfs pool's export id (1..65534), derived from its name so that it never changes: NFSv3 file handles carry it,
 * and a VM holding a handle must keep it across other pools' changes. Validation refuses two pools of one storage
 * host whose ids collide (rename one).
 */
export function nfsExportId(pool: string): number {
  let h = 0x811c9dc5;
  for (const c of Buffer.from(pool)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  return 1 + (h % 65534);
}

/** Name of the volume a VM disk `{ pool, sizeMiB }` gets: `<vm>-<disk>` (deleted with the VM). */
export function vmVolumeName(vm: string, disk: string): string {
  return `${vm}-${disk}`;
}

/** The need capacity planning projects for a pool: `data × 1.5 + backup × 2 + reserve × 0.3` (all MiB). */
export function projectedNeedMiB(dataMiB: number, backupMiB: number, reserveMiB: number): number {
  return Math.ceil(dataMiB * 1.5 + backupMiB * 2 + reserveMiB * 0.3);
}

/** Used share of a pool above which capacity planning warns. */
export const CAPACITY_WARN_RATIO = 0.8;
