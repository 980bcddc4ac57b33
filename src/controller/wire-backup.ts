// The controller API's backup contract (issue 12, docs/backup.md), as the CLI and scripts see it. Long operations
// answer 202 with a task (its `result` is the schema named beside each route). No key value ever appears in an answer,
// except the recovery key `POST /v1/backups/keys` prints once.
//
//   POST /v1/backups/run          BackupRunBody      -> 202 task, result BackupRunResult
//   GET  /v1/backups              BackupListQuery    -> BackupList
//   POST /v1/backups/verify       BackupVerifyBody   -> 202 task, result BackupVerifyResult
//   POST /v1/backups/sync         BackupSyncBody     -> 202 task, result BackupSyncResult
//   POST /v1/backups/prune        BackupPruneBody    -> 202 task, result BackupPruneResult
//   GET  /v1/backups/status                          -> BackupStatus
//   POST /v1/backups/keys         BackupKeyCreateBody -> BackupKeyCreated  (admin)
//   POST /v1/backups/keys/import  BackupKeyImportBody -> BackupKeyImported (admin)
//   POST /v1/restores             RestoreBody        -> 202 task, result RestoreResult
//   POST /v1/restores/test        RestoreTestBody    -> 202 task, result RestoreTestResult
//   DELETE /v1/restores/:name                        -> 202 task (deletes a VM made by `restore --as`)
//   GET  /v1/restores                                -> RestoredVmList
import { z } from 'zod';
import {
  GcResultSchema,
  KeyFingerprintSchema,
  ObjectiveStatusSchema,
  PullResultSchema,
  SnapshotIdSchema,
  SnapshotSummarySchema,
  VerifyResultSchema,
} from '../shared/backup.js';
import { NAME_PATTERN } from '../spec/schema.js';

const name = z.string().regex(NAME_PATTERN);

/** `vmlink backup run VM [--policy P] [--full]`. */
export const BackupRunBodySchema = z
  .object({
    vm: name,
    /** The policy whose store, key and retention apply; default the one policy naming the VM. */
    policy: name.optional(),
    full: z.boolean().default(false),
  })
  .strict();
export const BackupRunResultSchema = z.object({ store: name, snapshot: SnapshotSummarySchema }).strict();
export type BackupRunResult = z.infer<typeof BackupRunResultSchema>;

/** `GET /v1/backups?vm=&store=`. */
export const BackupListQuerySchema = z.object({ vm: name.optional(), store: name.optional() }).strict();
export const BackupListSchema = z
  .object({
    snapshots: z.array(
      z.object({ store: name, offsite: z.boolean(), snapshot: SnapshotSummarySchema }).strict(),
    ),
    /** Stores that did not answer (their host down), with why: the list is partial then. */
    unreachable: z.array(z.object({ store: name, reason: z.string() }).strict()),
  })
  .strict();
export type BackupList = z.infer<typeof BackupListSchema>;

/** `vmlink backup verify [SNAPSHOT] [--store S] [--deep]`. */
export const BackupVerifyBodySchema = z
  .object({
    snapshot: SnapshotIdSchema.optional(),
    /** Default: every store (each snapshot is verified where it is). */
    store: name.optional(),
    /** Decrypt every chunk and recompute its id (the policy's key goes to the store host for this verify only). */
    deep: z.boolean().default(false),
  })
  .strict();
export const BackupVerifyResultSchema = z.object({ results: z.array(VerifyResultSchema) }).strict();

/** `vmlink backup sync [--store OFFSITE]`: each offsite store pulls from its source. */
export const BackupSyncBodySchema = z.object({ store: name.optional() }).strict();
export const BackupSyncResultSchema = z.object({ results: z.array(PullResultSchema) }).strict();

/** `vmlink backup prune [--policy P] [--dry-run]`: retention now (it also runs after each scheduled backup), then GC. */
export const BackupPruneBodySchema = z
  .object({ policy: name.optional(), dryRun: z.boolean().default(false), gc: z.boolean().default(true) })
  .strict();
export const BackupPruneResultSchema = z
  .object({
    policies: z.array(
      z
        .object({
          policy: name,
          store: name,
          kept: z.array(z.object({ snapshot: SnapshotIdSchema, reasons: z.array(z.string()) }).strict()),
          deleted: z.array(SnapshotIdSchema),
        })
        .strict(),
    ),
    gc: z.array(GcResultSchema),
  })
  .strict();
export type BackupPruneResult = z.infer<typeof BackupPruneResultSchema>;

/** `vmlink backup status`: every policy's objectives per VM, the stores, and when each schedule runs next. */
export const BackupStatusSchema = z
  .object({
    objectives: z.array(ObjectiveStatusSchema),
    policies: z.array(
      z
        .object({
          name,
          store: name,
          schedule: z.string(),
          lastRunAt: z.string().datetime().optional(),
          lastOutcome: z.enum(['succeeded', 'failed']).optional(),
          lastError: z.string().optional(),
          nextRunAt: z.string().datetime().optional(),
          nextRestoreTestAt: z.string().datetime().optional(),
        })
        .strict(),
    ),
    stores: z.array(
      z
        .object({
          name,
          host: name,
          offsite: z.boolean(),
          reachable: z.boolean(),
          reason: z.string().optional(),
          snapshots: z.number().int().min(0).optional(),
          storedBytes: z.number().int().min(0).optional(),
          freeBytes: z.number().int().min(0).optional(),
        })
        .strict(),
    ),
  })
  .strict();
export type BackupStatus = z.infer<typeof BackupStatusSchema>;

/** `vmlink backup key create NAME`: a random 32-byte key sealed in the vault as secret NAME. */
export const BackupKeyCreateBodySchema = z.object({ name }).strict();
export const BackupKeyCreatedSchema = z
  .object({
    name,
    fingerprint: KeyFingerprintSchema,
    /** The key in printable form, shown this once: keep it offline; it restores the key on a new controller. */
    recoveryKey: z.string(),
  })
  .strict();
/** `vmlink backup key import NAME` (recovery key on stdin). */
export const BackupKeyImportBodySchema = z.object({ name, recoveryKey: z.string().min(1).max(512) }).strict();
export const BackupKeyImportedSchema = z.object({ name, fingerprint: KeyFingerprintSchema }).strict();

/** `vmlink restore SNAPSHOT (--as NAME [--host H] [--network N] | --in-place | --file PATH [--disk D])`. */
export const RestoreBodySchema = z
  .object({
    snapshot: SnapshotIdSchema,
    /** The store to read from; default the policy's store, else any store holding it (offsite last). */
    store: name.optional(),
    /** The policy whose key opens it; default the one whose key fingerprint matches the snapshot's. */
    policy: name.optional(),
    target: z.discriminatedUnion('kind', [
      /** A new VM `name` from the snapshot's config (NICs on `network` if given, fresh MACs, addresses by DHCP). */
      z
        .object({
          kind: z.literal('new'),
          name,
          host: name.optional(),
          network: name.optional(),
          start: z.boolean().default(true),
        })
        .strict(),
      /** Over the VM's own disks: it must be stopped (or its host failed and `host` names another). */
      z.object({ kind: z.literal('in-place'), host: name.optional() }).strict(),
      /** One file's content (ext2/3/4), read on `host` (default the VM's host). */
      z
        .object({
          kind: z.literal('file'),
          path: z.string().regex(/^\/[^\0]{0,4095}$/),
          disk: name.default('root'),
          partition: z.number().int().min(1).max(128).optional(),
          host: name.optional(),
        })
        .strict(),
    ]),
  })
  .strict();
export type RestoreBody = z.infer<typeof RestoreBodySchema>;
export const RestoreResultSchema = z
  .object({
    snapshot: SnapshotIdSchema,
    store: name,
    vm: name.optional(),
    host: name,
    seconds: z.number().min(0),
    bytesWritten: z.number().int().min(0),
    /** A file restore's content (base64) and size. */
    file: z
      .object({ path: z.string(), size: z.number().int().min(0), data: z.string() })
      .strict()
      .optional(),
  })
  .strict();
export type RestoreResult = z.infer<typeof RestoreResultSchema>;

/** `vmlink backup restore-test POLICY [--vm VM]`: the scheduled restore-and-boot test, now. */
export const RestoreTestBodySchema = z.object({ policy: name, vm: name.optional() }).strict();
export const RestoreTestResultSchema = z
  .object({
    policy: name,
    results: z.array(
      z
        .object({
          vm: name,
          snapshot: SnapshotIdSchema.optional(),
          ok: z.boolean(),
          /** Restore start to the guest agent answering: the measured RTO. */
          seconds: z.number().min(0).optional(),
          restoreSeconds: z.number().min(0).optional(),
          bootSeconds: z.number().min(0).optional(),
          error: z.string().optional(),
        })
        .strict(),
    ),
  })
  .strict();
export type RestoreTestResult = z.infer<typeof RestoreTestResultSchema>;

/** VMs made by `restore --as`: apply leaves them alone until `DELETE /v1/restores/:name`. */
export const RestoredVmListSchema = z
  .object({
    restored: z.array(
      z
        .object({ name, host: name, snapshot: SnapshotIdSchema, store: name, at: z.string().datetime() })
        .strict(),
    ),
  })
  .strict();
