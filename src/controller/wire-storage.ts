// The controller API's storage contract (issue 10): pools, volumes, snapshots, image import and capacity, as the
// CLI and scripts see them. Answers carry secret names at most, never a value.
import { z } from 'zod';
import { SnapshotNameSchema, VmSnapshotsSchema } from '../agent/wire-storage.js';
import { DISK_SIZE_MIB_MAX } from '../shared/limits.js';
import { PoolTypes } from '../shared/storage.js';
import { NAME_PATTERN } from '../spec/schema.js';

const name = z.string().regex(NAME_PATTERN);
const sizeMiB = z.number().int().min(1).max(DISK_SIZE_MIB_MAX);

/** `:pool/:name` of a volume route. */
export const VolumeParamsSchema = z.object({ pool: name, name }).strict();
/** `:pool/:name/snapshots/:snap`. */
export const VolumeSnapshotParamsSchema = z.object({ pool: name, name, snap: SnapshotNameSchema }).strict();
/** `:name/snapshots/:snap` of a VM. */
export const VmSnapshotParamsSchema = z.object({ name, snap: SnapshotNameSchema }).strict();
/** `GET /v1/volumes?pool=`. */
export const VolumeQuerySchema = z.object({ pool: name.optional() }).strict();

/** `POST /v1/volumes`: an empty volume (thin qcow2 in dir and nfs pools, a raw LUN in iscsi ones). */
export const VolumeCreateBodySchema = z
  .object({
    pool: name,
    name,
    sizeMiB,
    /** LUKS-encrypted, keyed by this controller-kept secret (dir and nfs pools). */
    encryption: z.object({ secret: name }).strict().optional(),
  })
  .strict();
/** `POST /v1/volumes/:pool/:name/resize`: grows only. */
export const VolumeResizeBodySchema = z.object({ sizeMiB }).strict();
/** `POST /v1/volumes/:pool/:name/clone`: a new volume of the same pool from this one. */
export const VolumeCloneBodySchema = z
  .object({
    name,
    /** A qcow2 overlay on the source (which then cannot be deleted while the clone lives); default a full copy. */
    linked: z.boolean().default(false),
  })
  .strict();
/** `POST .../snapshots` (volumes). */
export const SnapshotBodySchema = z.object({ name: SnapshotNameSchema }).strict();
/** `POST /v1/vms/:name/snapshots`. */
export const VmSnapshotBodySchema = z
  .object({ name: SnapshotNameSchema, memory: z.boolean().default(false) })
  .strict();
/** `POST /v1/images/import`: a file on the pool's host, or a copy of a volume of the same pool. */
export const ImageImportBodySchema = z
  .object({
    pool: name,
    name,
    sourcePath: z
      .string()
      .regex(/^\/[\w./-]{1,250}$/, 'must be an absolute path of letters, digits, ., _, - and /')
      .refine((p) => !p.split('/').includes('..'), 'must not contain ..')
      .optional(),
    fromVolume: z.object({ pool: name, volume: name }).strict().optional(),
  })
  .strict()
  .refine((b) => (b.sourcePath === undefined) !== (b.fromVolume === undefined), {
    message: 'give exactly one of sourcePath (a file on the pool host) and fromVolume',
    path: ['sourcePath'],
  });

/** What a volume change did. */
export const VolumeChangeSchema = z
  .object({
    pool: z.string(),
    name: z.string(),
    /** The running VM a resize went through (online, QMP), when it did. */
    via: z.string().optional(),
    /** Something the caller should do next (e.g. update the spec's size). */
    note: z.string().optional(),
  })
  .strict();
/** What a volume change did. */
export type VolumeChange = z.infer<typeof VolumeChangeSchema>;

/** What a VM snapshot change did. */
export const VmSnapshotChangeSchema = z.object({ vm: z.string(), snapshot: z.string() }).strict();

/** Snapshots of a volume or a VM. */
export const SnapshotListSchema = VmSnapshotsSchema;

const features = z.object({
  snapshots: z.boolean(),
  onlineResize: z.boolean(),
  linkedClones: z.boolean(),
  encryption: z.boolean(),
  fence: z.boolean(),
});

/** `GET /v1/pools`: each pool of the applied spec (and any other a host reports), as its host observes it. */
export const PoolListSchema = z.array(
  z.object({
    name: z.string(),
    type: z.enum(PoolTypes),
    host: z.string(),
    /** `ok`; `problems` (see them); `missing` (declared, not realised yet); `unknown` (host did not answer). */
    state: z.enum(['ok', 'problems', 'missing', 'unknown']),
    /** Whether the applied spec declares it. */
    inSpec: z.boolean(),
    features,
    capacityMiB: z.number().optional(),
    usedMiB: z.number().optional(),
    freeMiB: z.number().optional(),
    volumes: z.number().int(),
    problems: z.array(z.string()),
    error: z.string().optional(),
  }),
);
/** One pool as `volume list`'s neighbour `GET /v1/pools` shows it. */
export type PoolView = z.infer<typeof PoolListSchema>[number];

/** `GET /v1/volumes`: every volume the pools' hosts report. */
export const VolumeListSchema = z.array(
  z.object({
    pool: z.string(),
    name: z.string(),
    host: z.string(),
    format: z.enum(['qcow2', 'raw', 'iso']),
    sizeMiB: z.number(),
    allocatedMiB: z.number(),
    encrypted: z.boolean(),
    backingVolume: z.string().optional(),
    snapshots: z.number().int(),
    /** VMs whose config uses it (applied spec and hosts' VMs), with their disk name and whether they run. */
    usedBy: z.array(z.object({ vm: z.string(), disk: z.string(), running: z.boolean() })),
    /** The spec path that declares it (`volumes[2]`, `vms[0].disks[1]`), if any: apply keeps or makes it. */
    declaredAt: z.string().optional(),
  }),
);
/** One volume as `volume list` shows it. */
export type VolumeView = z.infer<typeof VolumeListSchema>[number];

/** `GET /v1/capacity`: per pool what is used and promised, and the projected need. */
export const CapacityReportSchema = z.object({
  /** Used share of a pool above which it is flagged. */
  warnRatio: z.number(),
  pools: z.array(
    z.object({
      pool: z.string(),
      type: z.enum(PoolTypes),
      host: z.string(),
      capacityMiB: z.number().optional(),
      usedMiB: z.number().optional(),
      freeMiB: z.number().optional(),
      /** Sum of the virtual sizes of its volumes (existing, and declared ones not made yet). */
      provisionedMiB: z.number(),
      /** Sum of size × backupCopies of the spec's disks and volumes in it. */
      backupMiB: z.number(),
      reserveMiB: z.number(),
      /** data × 1.5 + backup × 2 + reserve × 0.3 (`projectedNeedMiB`). */
      projectedNeedMiB: z.number(),
      usedRatio: z.number().optional(),
      /** provisioned / capacity, and the spec's limit on it. */
      overcommit: z.number().optional(),
      maxOvercommit: z.number().optional(),
      warnings: z.array(z.string()),
      error: z.string().optional(),
    }),
  ),
});
/** Answer of `GET /v1/capacity`. */
export type CapacityReport = z.infer<typeof CapacityReportSchema>;
