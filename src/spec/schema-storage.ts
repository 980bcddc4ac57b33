// The spec's storage objects: VM disks, pools (dir, iSCSI, NFS), named volumes, and passthrough device requests.
import { z } from 'zod';
import { DISK_SIZE_MIB_MAX } from '../shared/limits.js';
import { POOL_CLIENTS_MAX, PoolTypes } from '../shared/storage.js';
import { cidr, ipv4, name, usbId } from './schema-primitives.js';

/**
 * A VM disk. Three forms: `{ name, sizeMiB }` a qcow2 in the VM's own directory (as before pools);
 * `{ name, pool, sizeMiB }` a volume `<vm>-<name>` made for the VM in a pool (deleted with the VM);
 * `{ name, pool, volume }` a volume of `volumes:` (kept when the VM goes). Validation checks the combination.
 */
export const DiskSchema = z
  .object({
    name,
    sizeMiB: z.number().int().min(1).max(DISK_SIZE_MIB_MAX).optional(),
    /** The pool (`pools[].name`) the disk's volume lives in; absent: the VM's directory. */
    pool: name.optional(),
    /** A volume of `volumes:` in `pool`. */
    volume: name.optional(),
    /** The guest sees a CD-ROM (an ISO volume, read-only) instead of a disk. */
    media: z.enum(['disk', 'cdrom']).default('disk'),
    readOnly: z.boolean().default(false),
    /**
     * LUKS-encrypted qcow2 keyed by a controller-kept secret (`vmlink secret set NAME`); the spec names the secret,
     * never its value. Fixed at creation: changing it recreates nothing (the disk keeps its key).
     */
    encryption: z.object({ secret: name }).strict().optional(),
    /** Backup copies capacity planning counts for this disk (each its size). */
    backupCopies: z.number().int().min(0).max(32).default(0),
  })
  .strict();

/** A storage pool: where volumes live, on one host. */
export const PoolSchema = z
  .object({
    name,
    type: z.enum(PoolTypes),
    /** The host holding it: a compute host for `dir`, a storage host (`role: storage`) for `iscsi` and `nfs`. */
    host: name,
    /** Directory of its files on that host; default /var/lib/vmlink/pools/<name>. */
    path: z
      .string()
      .regex(/^\/[\w./-]{1,200}$/, 'must be an absolute path of letters, digits, ., _, - and /')
      .refine((p) => !p.split('/').includes('..'), 'must not contain ..')
      .optional(),
    /** Networks allowed to reach an iscsi or nfs pool; absent: any (CHAP still guards iscsi). */
    clients: z.array(cidr).max(POOL_CLIENTS_MAX).optional(),
    /** iscsi: the CHAP user initiators log in as and the controller-kept secret holding its password. */
    chap: z
      .object({
        user: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 letters, digits, ., _ or -'),
        secret: name,
      })
      .strict()
      .optional(),
    /** The address VM hosts reach an iscsi or nfs pool at; default the storage host's address. */
    address: ipv4.optional(),
    /** Space kept free for the pool's own use (capacity planning counts it). */
    reserveMiB: z.number().int().min(0).max(DISK_SIZE_MIB_MAX).default(0),
    /** Most provisioned size per unit of capacity (2 = thin volumes may promise twice the space); plan-time check. */
    maxOvercommit: z.number().min(0.1).max(100).optional(),
  })
  .strict();

/** A named volume in a pool, kept across VMs (apply never deletes one; `vmlink volume delete` does). */
export const VolumeSchema = z
  .object({
    name,
    pool: name,
    sizeMiB: z.number().int().min(1).max(DISK_SIZE_MIB_MAX).optional(),
    /** Created as a clone of this volume of the same pool (a template); `linked`: a qcow2 overlay on it. */
    from: z
      .object({ volume: name, linked: z.boolean().default(true) })
      .strict()
      .optional(),
    encryption: z.object({ secret: name }).strict().optional(),
    backupCopies: z.number().int().min(0).max(32).default(0),
  })
  .strict();

/** A host device passed through to a VM: a PCI function by address, or a USB device by vendor:product. */
export const DeviceRequestSchema = z.union([
  z
    .object({
      pci: z
        .string()
        .regex(/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/, 'must be a PCI address such as 0000:65:00.0'),
    })
    .strict(),
  z.object({ usb: usbId(false) }).strict(),
]);
