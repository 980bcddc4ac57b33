// Wire of backups (issue 12, docs/backup.md) between the controller and agents, and between agents: a VM host's agent
// sends chunks to a store host's agent, and an offsite store's agent pulls from the primary's. Strict and bounded like
// the rest of the wire. Routes and who may call them:
//
//   store host, callable by the controller and by other hosts' agents (host certificates):
//     POST /v1/backup-stores/:store/chunks/missing   {ids}        -> {missing}     (present ones are touched: GC grace)
//     PUT  /v1/backup-stores/:store/chunks/:id       octet-stream -> {stored}      (checksum checked, atomic)
//     GET  /v1/backup-stores/:store/chunks/:id                    -> octet-stream
//     PUT  /v1/backup-stores/:store/snapshots/:id    Manifest     -> {ok}          (every chunk present, key bound)
//     GET  /v1/backup-stores/:store/snapshots?vm=                 -> {snapshots}
//     GET  /v1/backup-stores/:store/snapshots/:id                 -> Manifest
//     (an offsite store answers writes from other hosts 403: it is filled by its own pulls only)
//   store host, controller only (plus the local root socket):
//     POST /v1/backup-stores/:store/ensure           {store}      -> BackupStoreStatus
//     GET  /v1/backup-stores                                      -> {stores}
//     POST /v1/backup-stores/:store/prune            {snapshots}  -> {deleted}     (offsite: local socket only)
//     POST /v1/backup-stores/:store/gc               {graceMs?}   -> GcResult      (a job for large stores? no: bounded by the store's size, sync)
//     POST /v1/backup-stores/:store/verify           VerifyRequest -> BackupJob
//     POST /v1/backup-stores/:store/pull             PullRequest  -> BackupJob     (offsite stores: fetch what they lack)
//   any host, controller only:
//     POST /v1/backup-jobs                           BackupRunRequest  -> BackupJob
//     POST /v1/restore-jobs                          RestoreRequest    -> BackupJob
//     POST /v1/file-restore-jobs                     FileRestoreRequest -> BackupJob
//     GET  /v1/backup-jobs/:id                                          -> BackupJob (every kind of job)
//   Who called is known from the connection: the local root socket (no TLS), the controller's certificate, or a
//   host's certificate (peer routes only). An offsite store answers 403 to chunk and manifest writes from anyone but
//   its own pulls, and to prune from anyone but the local socket.
import { z } from 'zod';
import {
  BACKUP_IDS_PER_REQUEST_MAX,
  BackupJobSchema,
  BackupStoreConfigSchema,
  BackupStoreStatusSchema,
  ChunkIdSchema,
  GcResultSchema,
  PullResultSchema,
  RetentionRulesSchema,
  SnapshotIdSchema,
  SnapshotSummarySchema,
  StoreLocationSchema,
  VerifyResultSchema,
} from '../shared/backup.js';
import { NAME_PATTERN } from '../spec/schema.js';
import { SecretValueBase64Schema } from '../spec/schema-primitives.js';

const name = z.string().regex(NAME_PATTERN);

/** The store routes (method and route pattern) another host's agent may call with its host certificate. */
export const BACKUP_PEER_ROUTES: ReadonlySet<string> = new Set([
  'POST /v1/backup-stores/:store/chunks/missing',
  'PUT /v1/backup-stores/:store/chunks/:id',
  'GET /v1/backup-stores/:store/chunks/:id',
  'PUT /v1/backup-stores/:store/snapshots/:id',
  'GET /v1/backup-stores/:store/snapshots',
  'GET /v1/backup-stores/:store/snapshots/:id',
]);

/** A backup key's value (32 bytes, base64), opened by the controller from its vault for this one request. */
export const BackupKeySchema = z
  .object({
    /** The secret's name (errors name it; the value is never logged). */
    name,
    value: SecretValueBase64Schema,
  })
  .strict();
export type BackupKey = z.infer<typeof BackupKeySchema>;

export const MissingChunksRequestSchema = z
  .object({ ids: z.array(ChunkIdSchema).min(1).max(BACKUP_IDS_PER_REQUEST_MAX) })
  .strict();
export const MissingChunksAnswerSchema = z.object({ missing: z.array(ChunkIdSchema) }).strict();
export const PutChunkAnswerSchema = z.object({ stored: z.boolean() }).strict();
export const SnapshotListSchema = z.object({ snapshots: z.array(SnapshotSummarySchema) }).strict();
/** Realise a store; `path` absent: the agent's default `<stateDir>/backup-stores/<name>`. */
export const StoreEnsureRequestSchema = z
  .object({ store: BackupStoreConfigSchema.partial({ path: true }) })
  .strict();
export type StoreEnsureRequest = z.infer<typeof StoreEnsureRequestSchema>;
export const StoreListSchema = z.object({ stores: z.array(BackupStoreStatusSchema) }).strict();
export const PruneRequestSchema = z
  .object({ snapshots: z.array(SnapshotIdSchema).min(1).max(BACKUP_IDS_PER_REQUEST_MAX) })
  .strict();
export const PruneAnswerSchema = z.object({ deleted: z.array(SnapshotIdSchema) }).strict();
export const GcRequestSchema = z
  .object({
    graceMs: z
      .number()
      .int()
      .min(0)
      .max(7 * 24 * 3600 * 1000)
      .optional(),
  })
  .strict();
export { GcResultSchema, PullResultSchema, VerifyResultSchema };

/** Verify a store's snapshots: every chunk present and its checksum right; `key` makes it deep (decrypt, re-id). */
export const VerifyRequestSchema = z
  .object({
    /** Absent: every snapshot. */
    snapshots: z.array(SnapshotIdSchema).max(BACKUP_IDS_PER_REQUEST_MAX).optional(),
    key: BackupKeySchema.optional(),
  })
  .strict();
export type VerifyRequest = z.infer<typeof VerifyRequestSchema>;

/** An offsite store's pull from its source store (host certificates both ways). */
export const PullRequestSchema = z
  .object({
    from: StoreLocationSchema,
    /** Absent: every snapshot the source has and this store lacks. */
    snapshots: z.array(SnapshotIdSchema).max(BACKUP_IDS_PER_REQUEST_MAX).optional(),
    /** Applied by this store's own agent after the pull (an offsite store's own retention). */
    retention: RetentionRulesSchema.optional(),
  })
  .strict();
export type PullRequest = z.infer<typeof PullRequestSchema>;

/** Back up one VM of this host to a store. */
export const BackupRunRequestSchema = z
  .object({
    vm: name,
    /** The id the new snapshot gets (the controller picks it: `<vm>@<now>`). */
    snapshot: SnapshotIdSchema,
    policy: name,
    store: StoreLocationSchema,
    key: BackupKeySchema,
    /** The newest snapshot of this VM and policy in the store: incremental disks build on it. */
    base: SnapshotIdSchema.optional(),
    /** Read every disk whole even when a bitmap would allow less. */
    full: z.boolean().default(false),
    /** Freeze the guest's filesystems through its guest agent for the fleece instant (when it answers). */
    freeze: z.boolean().default(true),
    /** Values of secrets the VM's disks need to be opened while it is stopped (LUKS keys, CHAP passwords). */
    secrets: z
      .array(z.object({ name, value: BackupKeySchema.shape.value }).strict())
      .max(16)
      .optional(),
  })
  .strict();
export type BackupRunRequest = z.infer<typeof BackupRunRequestSchema>;

/** Restore a snapshot's disks into a stopped VM of this host (made by `vm.create` first for `--as`). */
export const RestoreRequestSchema = z
  .object({
    snapshot: SnapshotIdSchema,
    store: StoreLocationSchema,
    key: BackupKeySchema,
    /** The VM whose disks are overwritten (it must exist here and be stopped). */
    vm: name,
    /** Snapshot disk -> the VM's disk, by name; absent: the same names. Disks the snapshot lacks stay as they are. */
    disks: z
      .array(z.object({ from: name, to: name }).strict())
      .max(17)
      .optional(),
    secrets: BackupRunRequestSchema.shape.secrets,
  })
  .strict();
export type RestoreRequest = z.infer<typeof RestoreRequestSchema>;

/** Read one file out of a snapshot's disk (ext2/3/4, read without mounting the guest's filesystem in the host). */
export const FileRestoreRequestSchema = z
  .object({
    snapshot: SnapshotIdSchema,
    store: StoreLocationSchema,
    key: BackupKeySchema,
    disk: name,
    /** Partition number on that disk (1-based); absent: the disk holds the filesystem directly. */
    partition: z.number().int().min(1).max(128).optional(),
    path: z
      .string()
      .regex(/^\/[^\0]{0,4095}$/, 'must be an absolute path')
      .refine((p) => !p.split('/').includes('..'), 'must not contain ..'),
  })
  .strict();
export type FileRestoreRequest = z.infer<typeof FileRestoreRequestSchema>;

export const BackupJobAnswerSchema = BackupJobSchema;
