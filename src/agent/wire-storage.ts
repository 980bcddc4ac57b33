// Wire types of storage (issue 10): pools, volumes, VM disks from pools, snapshots and devices as they cross between
// controller and agent. Strict and bounded like the rest of the wire (wire.ts composes these into its actions).
import { z } from 'zod';
import { FencingTokenSchema } from '../shared/cluster.js';
import {
  DEVICE_TEXT_MAX,
  type DeviceInventory,
  type DeviceRequest,
  HOST_USE_MAX,
  MDEV_TYPES_MAX,
  PCI_ADDRESS_PATTERN,
  PCI_DEVICES_MAX,
  USB_DEVICES_MAX,
} from '../shared/devices.js';
import { DISK_SIZE_MIB_MAX, VM_DISKS_MAX } from '../shared/limits.js';
import type { DiskConfig } from '../shared/model.js';
import {
  type DiskSource,
  type ObservedPool,
  POOL_CLIENTS_MAX,
  POOL_VOLUMES_MAX,
  type PoolConfig,
  PoolTypes,
  VOLUME_SESSIONS_MAX,
  VOLUME_SNAPSHOTS_MAX,
  type VolumeConfig,
} from '../shared/storage.js';
import { Ipv4Schema, NAME_PATTERN, NetworkCidrSchema } from '../spec/schema.js';
import { DeviceRequestSchema } from '../spec/schema-storage.js';

const name = z.string().regex(NAME_PATTERN);
const sizeMiB = z.number().int().min(1).max(DISK_SIZE_MIB_MAX);
/** An absolute path without `..` or odd characters (pool directories and their files). */
const absPath = z
  .string()
  .regex(/^\/[\w./-]{1,250}$/)
  .refine((p) => !p.split('/').includes('..'), 'must not contain ..');
const chapUser = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/);
const format = z.enum(['qcow2', 'raw', 'iso']);
/** The controller-kept secret holding an encrypted volume's key (its value travels in `secrets`). */
const keyName = z.object({ secret: name }).strict().optional();
/** A snapshot's name: what `qemu-img snapshot` and QMP accept without quoting trouble. */
export const SnapshotNameSchema = z
  .string()
  .regex(
    /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/,
    'must be 1-63 letters, digits, ., _ or -, starting with a letter or digit',
  );

/** PoolConfig as it crosses the wire. */
export const PoolConfigSchema = z
  .object({
    name,
    type: z.enum(PoolTypes),
    path: absPath,
    clients: z.array(NetworkCidrSchema).max(POOL_CLIENTS_MAX).optional(),
    chap: z.object({ user: chapUser, secret: name }).strict().optional(),
    nfs: z
      .object({
        exportId: z.number().int().min(1).max(65534),
        pseudoPath: z.string().regex(/^\/vmlink\/[a-z][a-z0-9-]{0,30}$/),
      })
      .strict()
      .optional(),
    iscsi: z
      .object({ tgtControlPort: z.number().int().min(0).max(1023) })
      .strict()
      .optional(),
  })
  .strict() satisfies z.ZodType<PoolConfig>;

/** VolumeConfig as it crosses the wire. */
export const VolumeConfigSchema = z
  .object({
    pool: name,
    name,
    sizeMiB,
    format,
    from: z.object({ volume: name, linked: z.boolean() }).strict().optional(),
    encryption: z.object({ secret: name }).strict().optional(),
  })
  .strict() satisfies z.ZodType<VolumeConfig>;

/** DiskSource as it crosses the wire. */
export const DiskSourceSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('file'), pool: name, volume: name, path: absPath, format }).strict(),
  z
    .object({
      kind: z.literal('iscsi'),
      pool: name,
      volume: name,
      portal: z.string().regex(/^(\d{1,3}\.){3}\d{1,3}:\d{1,5}$/),
      iqn: z.string().regex(/^iqn\.\d{4}-\d{2}\.[a-z0-9.-]+:[a-z0-9.-]{1,200}$/),
      lun: z.number().int().min(0).max(255),
      chap: z.object({ user: chapUser, secret: name }).strict().optional(),
    })
    .strict(),
  z
    .object({
      kind: z.literal('nfs'),
      pool: name,
      volume: name,
      server: Ipv4Schema,
      export: z.string().regex(/^\/[\w./-]{1,200}$/),
      file: z.string().regex(/^[a-z][a-z0-9-]{0,62}\.(qcow2|img|iso)$/),
      format,
    })
    .strict(),
]) satisfies z.ZodType<DiskSource>;

/** DiskConfig as it crosses the wire. */
export const DiskConfigSchema = z
  .object({
    name,
    sizeMiB: sizeMiB.optional(),
    encryption: z.object({ secret: name }).strict().optional(),
    source: DiskSourceSchema.optional(),
    media: z.literal('cdrom').optional(),
    readOnly: z.literal(true).optional(),
  })
  .strict() satisfies z.ZodType<DiskConfig>;

/** The VM disks list of a VmConfig. */
export const DisksSchema = z.array(DiskConfigSchema).max(VM_DISKS_MAX);

/** Passthrough requests of a VmConfig. */
export const DeviceRequestsSchema = z.array(DeviceRequestSchema).max(8) satisfies z.ZodType<DeviceRequest[]>;

/**
 * Storage actions (members of the agent's action union, see wire.ts). `pool.*` and `volume.*` run on the pool's
 * host; `vm.resizeDisk`, `vm.snapshot*` on the VM's host (through QMP when it runs).
 */
export function storageActionSchemas<S extends z.ZodTypeAny>(secrets: S) {
  return [
    // `secrets`: the CHAP password of an iscsi pool.
    z
      .object({
        kind: z.literal('pool.ensure'),
        pool: PoolConfigSchema,
        configHash: z.string().regex(/^[0-9a-f]{8,64}$/),
        secrets,
      })
      .strict(),
    // Refused while the pool holds volumes.
    z.object({ kind: z.literal('pool.delete'), pool: PoolConfigSchema }).strict(),
    // Creates a volume unless it exists (an existing one is kept as it is, whatever its size).
    // `secrets`: the key of an encrypted volume.
    z.object({ kind: z.literal('volume.ensure'), volume: VolumeConfigSchema, secrets }).strict(),
    // Grows only; a shrink is refused. An encrypted volume names its key's secret (`encryption`), whose value comes
    // in `secrets`: qemu-img cannot open it without.
    z
      .object({ kind: z.literal('volume.resize'), pool: name, name, sizeMiB, encryption: keyName, secrets })
      .strict(),
    z.object({ kind: z.literal('volume.delete'), pool: name, name }).strict(),
    // Imports a file on the pool's host (qcow2, raw or ISO) as a new volume, converted to the pool's format.
    z.object({ kind: z.literal('volume.import'), pool: name, name, sourcePath: absPath }).strict(),
    z
      .object({
        kind: z.enum(['volume.snapshot', 'volume.rollback', 'volume.snapshotDelete']),
        pool: name,
        name,
        snapshot: SnapshotNameSchema,
        encryption: keyName,
        secrets,
      })
      .strict(),
    // Storage-side fencing (docs/ha.md): the volume's target lets in only `owner.address` (inside the pool's
    // `clients`), every other initiator's connections are closed, and a token older than the newest seen for the
    // volume is refused (FencedError) and changes nothing; the same token again is idempotent. `owner.peer`: a live
    // migration's target, let in too while the VM's state streams (the same token again without it: the owner alone).
    z
      .object({
        kind: z.literal('volume.fence'),
        pool: name,
        volume: name,
        owner: z
          .object({
            host: name,
            address: Ipv4Schema,
            token: FencingTokenSchema,
            peer: z.object({ host: name, address: Ipv4Schema }).strict().optional(),
          })
          .strict(),
      })
      .strict(),
    // Online resize of a running VM's disk (QMP block_resize); the volume grows through QEMU.
    z.object({ kind: z.literal('vm.resizeDisk'), name, disk: name, sizeMiB }).strict(),
    // A VM's disk to a new volume of a dir pool on its host: live while it runs (mirror, pivot), else a copy.
    z.object({ kind: z.literal('vm.moveDisk'), name, disk: name, pool: name, volume: name }).strict(),
    // All of a VM's disks at one instant (a QMP transaction), with RAM and device state when `memory`.
    z
      .object({ kind: z.literal('vm.snapshot'), name, snapshot: SnapshotNameSchema, memory: z.boolean() })
      .strict(),
    z
      .object({ kind: z.enum(['vm.rollback', 'vm.snapshotDelete']), name, snapshot: SnapshotNameSchema })
      .strict(),
  ] as const;
}

const snapshot = z.object({
  name: z.string(),
  createdAt: z.string(),
  vmStateBytes: z.number().int().min(0).optional(),
});

/** Pools as a host reports them. */
export const ObservedPoolsSchema = z.array(
  z.object({
    name: z.string(),
    type: z.enum(PoolTypes),
    configHash: z.string(),
    problems: z.array(z.string()),
    config: PoolConfigSchema.optional(),
    capacityMiB: z.number().min(0),
    usedMiB: z.number().min(0),
    freeMiB: z.number().min(0),
    volumes: z
      .array(
        z.object({
          name: z.string(),
          format,
          sizeMiB: z.number().min(0),
          allocatedMiB: z.number().min(0),
          encrypted: z.boolean(),
          backingVolume: z.string().optional(),
          snapshots: z.array(snapshot).max(VOLUME_SNAPSHOTS_MAX),
          sessions: z
            .array(
              z.object({
                initiator: z.string().max(256),
                addresses: z.array(z.string().max(64)).max(8),
              }),
            )
            .max(VOLUME_SESSIONS_MAX)
            .optional(),
          fence: z
            .object({
              host: z.string().max(64),
              address: z.string().max(64),
              token: FencingTokenSchema,
              at: z.string().max(64),
              peer: z.object({ host: z.string().max(64), address: z.string().max(64) }).optional(),
            })
            .optional(),
        }),
      )
      .max(POOL_VOLUMES_MAX),
  }),
) satisfies z.ZodType<ObservedPool[]>;

/** A VM's snapshots (`GET /v1/vms/:name/snapshots`): whole-VM snapshots present on every one of its qcow2 disks. */
export const VmSnapshotsSchema = z.object({ snapshots: z.array(snapshot).max(VOLUME_SNAPSHOTS_MAX) });

/** A host's devices (`GET /v1/devices`, and in the host report): every field typed and bounded. */
const hex4 = z.string().regex(/^[0-9a-f]{4}$/);
const pciAddress = z.string().regex(PCI_ADDRESS_PATTERN);
const deviceText = z.string().max(DEVICE_TEXT_MAX);
const count = z.number().int().min(0).max(65_535);
export const DeviceInventorySchema = z.object({
  iommu: z.boolean(),
  pci: z
    .array(
      z.object({
        address: pciAddress,
        vendorId: hex4,
        deviceId: hex4,
        vendorName: deviceText.optional(),
        deviceName: deviceText.optional(),
        classCode: z.string().regex(/^[0-9a-f]{6}$/),
        className: deviceText.optional(),
        driver: z.string().max(64).optional(),
        iommuGroup: z.number().int().min(0).optional(),
        numaNode: z.number().int().min(-1).max(4096).optional(),
        sriov: z
          .object({ totalVfs: count, numVfs: count, vfs: z.array(pciAddress).max(PCI_DEVICES_MAX) })
          .optional(),
        physfn: pciAddress.optional(),
        mdevTypes: z
          .array(z.object({ id: z.string().max(64), name: deviceText.optional(), available: count }))
          .max(MDEV_TYPES_MAX)
          .optional(),
        hostUse: z.string().max(HOST_USE_MAX).optional(),
      }),
    )
    .max(PCI_DEVICES_MAX),
  usb: z
    .array(
      z.object({
        path: z.string().regex(/^[1-9]\d{0,2}-\d{1,3}(\.\d{1,3}){0,6}$/),
        busnum: count,
        devnum: count,
        vendorId: hex4,
        productId: hex4,
        manufacturer: deviceText.optional(),
        product: deviceText.optional(),
        hostUse: z.string().max(HOST_USE_MAX).optional(),
      }),
    )
    .max(USB_DEVICES_MAX),
}) satisfies z.ZodType<DeviceInventory>;

/** The block devices a running VM's QEMU has open (`GET /v1/vms/:name/disks`, for verify); never a secret. */
export const OpenDisksSchema = z.object({
  disks: z
    .array(
      z.object({
        disk: z.string().max(64),
        target: z.string().max(1024),
        readOnly: z.boolean(),
      }),
    )
    .max(VM_DISKS_MAX + 2),
});
