// Backups (issue 12, docs/backup.md): the contract every side shares. A snapshot is a manifest (plain JSON: which
// chunks make each disk) plus content-addressed chunks: fixed-size pieces of a disk (1 MiB for new chains, 4 MiB in
// version-1 manifests; the size recorded per disk), named by a keyed digest of their
// plaintext, compressed, then encrypted client-side with AES-256-GCM. Stores (directories on a storage or compute host,
// served by that host's agent) hold chunks and manifests and never see a key.
import { z } from 'zod';

// ---- Limits and timing -----------------------------------------------------------------------------------------

/**
 * The largest chunk (PBS's fixed size), and the only one of version-1 manifests: every blob, decompression and zero
 * chunk is bounded by it. A disk is cut at every `chunkBytes` (recorded per disk); the last chunk may be shorter.
 */
export const BACKUP_CHUNK_BYTES = 4 * 1024 * 1024;
/** The smallest chunk a manifest may name (smaller ones cost more per byte than they save; 16x QEMU's 64 KiB
 * bitmap granularity, and a GPT's head always fits the first one). */
export const BACKUP_CHUNK_BYTES_MIN = 256 * 1024;
/**
 * The chunk size of new chains (a backup whose base disk has another size reads that disk whole once, reason
 * `chunk-size-changed`). 1 MiB: a 1 MiB write at a random offset dirties two chunks (2 MiB read) instead of one or
 * two 4 MiB ones (~5 MiB); docs/backup.md, "Measured", has the A/B against 4 MiB and 2 MiB. A constant, not a
 * store or policy setting: one size serves every workload measured, and a changed size costs each chain a full read.
 */
export const BACKUP_CHUNK_BYTES_NEW = 1024 * 1024;

/** Whether `n` is a chunk size a manifest may record: a power of two from BACKUP_CHUNK_BYTES_MIN to BACKUP_CHUNK_BYTES. */
export function isChunkSize(n: number): boolean {
  return Number.isInteger(n) && n >= BACKUP_CHUNK_BYTES_MIN && n <= BACKUP_CHUNK_BYTES && (n & (n - 1)) === 0;
}

/** Chunks of a disk of `sizeBytes` cut at every `chunkBytes`. */
export const chunkCountOf = (sizeBytes: number, chunkBytes: number): number =>
  Math.ceil(sizeBytes / chunkBytes);
/** Most bytes a stored chunk blob may have (header + AES-GCM of a chunk that did not compress, with room to spare). */
export const BACKUP_BLOB_MAX_BYTES = BACKUP_CHUNK_BYTES + 64 * 1024;
/** Most chunks one disk of a manifest may list (16 TiB at 4 MiB, 4 TiB at 1 MiB; the manifest's byte cap below
 * comes first). */
export const BACKUP_DISK_CHUNKS_MAX = 4 * 1024 * 1024;
/** Most bytes of one manifest as it crosses the wire or is read from a store (a 16 TiB disk's index is ~270 MiB:
 * more than this is refused; such disks need the binary index a later version brings). */
export const BACKUP_MANIFEST_MAX_BYTES = 64 * 1024 * 1024;
/** Most chunk ids in one `missing` query or one pull page. */
export const BACKUP_IDS_PER_REQUEST_MAX = 4096;
/** Most snapshots one store lists in one answer. */
export const BACKUP_SNAPSHOTS_LIST_MAX = 10_000;
/** Chunks a backup or restore sends or fetches at once (per disk job). */
export const BACKUP_TRANSFER_CONCURRENCY = 4;
/** Unreferenced chunks younger than this survive garbage collection: a running backup may be about to name them
 * (it touches every chunk it reuses, as PBS does with atime). */
export const BACKUP_GC_GRACE_MS = 60 * 60 * 1000;
/** How often the controller's backup manager looks for due schedules and re-evaluates objectives. */
export const BACKUP_MANAGER_TICK_MS = 30_000;
/** How long the controller waits for an agent's backup or restore job before calling it failed. */
export const BACKUP_JOB_TIMEOUT_MS = 6 * 60 * 60 * 1000;
/** How often the controller polls an agent's job while it runs. */
export const BACKUP_JOB_POLL_MS = 1_000;
/** Most backup or restore jobs one agent keeps (finished ones are dropped oldest first). */
export const BACKUP_JOBS_KEPT = 64;
/** Most bytes `restore --file` returns (larger files: restore the disk). */
export const BACKUP_FILE_RESTORE_MAX_BYTES = 64 * 1024 * 1024;
/** Most policies and stores a spec may declare. */
export const BACKUP_POLICIES_MAX = 64;
export const BACKUP_STORES_MAX = 16;

// ---- Names and ids ---------------------------------------------------------------------------------------------

/** The spec's object names (spec/schema.ts NAME_PATTERN; repeated here so shared/ does not import spec/). */
const name = z.string().regex(/^[a-z][a-z0-9-]{0,30}$/);

/** A chunk's id: 64 lowercase hex digits, HMAC-SHA256 of its plaintext under the key's id key. */
export const ChunkIdSchema = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits');
export type ChunkId = z.infer<typeof ChunkIdSchema>;

/** A snapshot's time stamp in ids and file names: `YYYYMMDDTHHMMSSZ` (UTC, second precision). */
export const SNAPSHOT_STAMP_PATTERN = /^\d{8}T\d{6}Z$/;

/** A snapshot id: `<vm>@<stamp>`, e.g. `web1@20261201T020000Z`; unique within a store. */
export const SnapshotIdSchema = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,30}@\d{8}T\d{6}Z$/, 'must be VM@YYYYMMDDTHHMMSSZ, e.g. web1@20261201T020000Z');
export type SnapshotId = z.infer<typeof SnapshotIdSchema>;

/** The id of a snapshot of `vm` taken at `at` (milliseconds are dropped). */
export function snapshotId(vm: string, at: Date): SnapshotId {
  const s = at.toISOString(); // 2026-12-01T02:00:00.000Z
  return `${vm}@${s.slice(0, 4)}${s.slice(5, 7)}${s.slice(8, 10)}T${s.slice(11, 13)}${s.slice(14, 16)}${s.slice(17, 19)}Z`;
}

/** Splits a snapshot id into its VM and time. */
export function parseSnapshotId(id: SnapshotId): { vm: string; at: Date } {
  const [vm, st] = id.split('@') as [string, string];
  const iso = `${st.slice(0, 4)}-${st.slice(4, 6)}-${st.slice(6, 8)}T${st.slice(9, 11)}:${st.slice(11, 13)}:${st.slice(13, 15)}Z`;
  return { vm, at: new Date(iso) };
}

/** A key's public fingerprint: 32 hex digits derived from the key (HKDF, info `fingerprint`); never the key. */
export const KeyFingerprintSchema = z.string().regex(/^[0-9a-f]{32}$/);

// ---- Manifests ---------------------------------------------------------------------------------------------------

/** Why a backup read a whole disk rather than only what its dirty bitmap marked. */
export const FullReadReasons = [
  'first', // no earlier snapshot of this disk in the store
  'no-bitmap', // the disk has no bitmap for the earlier snapshot (VM restarted from a copy, bitmap dropped)
  'bitmap-inconsistent', // QEMU marks the bitmap inconsistent (crash while it was in use)
  'not-persistent', // a raw disk keeps bitmaps only while its QEMU runs, and it was restarted
  'size-changed', // the disk grew since the earlier snapshot
  'forced', // the user asked for a full backup
  'stopped-no-bitmap', // a stopped VM's disk has no usable bitmap
  'base-missing', // the earlier snapshot's manifest is gone or failed verify
  'chunk-size-changed', // the earlier snapshot cut this disk at another chunk size (e.g. 4 MiB, version 1)
] as const;
export type FullReadReason = (typeof FullReadReasons)[number];

/** One disk of a snapshot: its size and the id of every chunk, in order. */
const ManifestDiskFields = z
  .object({
    /** `root` or `disks[].name`. */
    name,
    sizeBytes: z.number().int().min(0),
    /** Where the disk is cut: every chunk but the last has this many bytes (always BACKUP_CHUNK_BYTES in version 1). */
    chunkBytes: z
      .number()
      .refine(isChunkSize, `must be a power of two from ${BACKUP_CHUNK_BYTES_MIN} to ${BACKUP_CHUNK_BYTES}`),
    chunks: z.array(ChunkIdSchema).max(BACKUP_DISK_CHUNKS_MAX),
    /** `incremental`: only the chunks its dirty bitmap marked were read; the rest came from `base`. */
    mode: z.enum(['full', 'incremental']),
    fullReason: z.enum(FullReadReasons).optional(),
    /** What this backup read from the disk, and what it added to the store (new chunks, their stored size). */
    readBytes: z.number().int().min(0),
    newChunks: z.number().int().min(0),
    storedBytes: z.number().int().min(0),
  })
  .strict();
export const ManifestDiskSchema = ManifestDiskFields.refine(
  (d) => d.chunks.length === chunkCountOf(d.sizeBytes, d.chunkBytes),
  {
    message: 'must list one chunk per chunkBytes of sizeBytes',
    path: ['chunks'],
  },
);
export type ManifestDisk = z.infer<typeof ManifestDiskSchema>;

/**
 * The manifest version that describes `disks`: 1 when every disk is cut at 4 MiB (readable by agents before version
 * 2), else 2 (other chunk sizes).
 */
export function manifestVersionFor(disks: ReadonlyArray<Pick<ManifestDisk, 'chunkBytes'>>): 1 | 2 {
  return disks.every((d) => d.chunkBytes === BACKUP_CHUNK_BYTES) ? 1 : 2;
}

/** A snapshot's manifest, written to the store last (so a crash mid-backup leaves no snapshot). */
export const ManifestSchema = z
  .object({
    /** 1: every disk in 4 MiB chunks; 2: each disk's `chunkBytes` any chunk size (isChunkSize). */
    version: z.union([z.literal(1), z.literal(2)]),
    id: SnapshotIdSchema,
    vm: name,
    /** The host the VM ran on when it was backed up. */
    host: name,
    /** The policy that made it (`manual` for `vmlink backup run` without one). */
    policy: name,
    /** ISO time of the consistent point (the fleece/freeze instant). */
    createdAt: z.string().datetime(),
    /** ISO time the manifest was written. */
    finishedAt: z.string().datetime(),
    /** The earlier snapshot incremental disks build on. */
    base: SnapshotIdSchema.optional(),
    /** `frozen`: the guest agent froze its filesystems for the fleece instant; else crash-consistent. */
    consistency: z.enum(['frozen', 'crash-consistent', 'stopped']),
    /** Why the guest was not frozen (no guest agent, it refused), for `crash-consistent`. */
    consistencyNote: z.string().max(300).optional(),
    keyFingerprint: KeyFingerprintSchema,
    disks: z.array(ManifestDiskSchema).max(17),
    /** The VM's launch config (VmConfig JSON), AES-256-GCM under the key, base64: restore `--as` rebuilds from it. */
    config: z.string().max(1024 * 1024),
    /** HMAC-SHA256 (manifest key) over the manifest's canonical JSON without this field: tampering is found at
     * restore and deep verify. */
    signature: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict()
  .refine((m) => m.version !== 1 || m.disks.every((d) => d.chunkBytes === BACKUP_CHUNK_BYTES), {
    message: `a version 1 manifest cuts every disk at ${BACKUP_CHUNK_BYTES} bytes`,
    path: ['disks'],
  });
export type Manifest = z.infer<typeof ManifestSchema>;

/** A snapshot as a store lists it (the manifest without its chunk lists). */
export const SnapshotSummarySchema = z
  .object({
    id: SnapshotIdSchema,
    vm: name,
    host: name,
    policy: name,
    createdAt: z.string().datetime(),
    finishedAt: z.string().datetime(),
    base: SnapshotIdSchema.optional(),
    consistency: z.enum(['frozen', 'crash-consistent', 'stopped']),
    keyFingerprint: KeyFingerprintSchema,
    disks: z
      .array(
        // A manifest disk's figures with the count of its chunks instead of their ids.
        ManifestDiskFields.omit({ chunks: true, chunkBytes: true })
          .extend({ chunkCount: z.number().int().min(0) })
          .strict(),
      )
      .max(17),
    /** Set by `verify`: its last outcome and time (absent: never verified). */
    verify: z
      .object({ ok: z.boolean(), at: z.string().datetime(), problems: z.array(z.string().max(500)).max(100) })
      .strict()
      .optional(),
  })
  .strict();
export type SnapshotSummary = z.infer<typeof SnapshotSummarySchema>;

// ---- Stores ------------------------------------------------------------------------------------------------------

/** A store as its host's agent realises it (from `backupStores[]`). */
export const BackupStoreConfigSchema = z
  .object({
    name,
    /** Its directory on the host (below the agent's `--pool-root`s, or the default under its state dir). */
    path: z
      .string()
      .regex(/^\/[\w./-]{1,250}$/)
      .refine((p) => !p.split('/').includes('..'), 'must not contain ..'),
    /** An offsite store: filled only by its own pulls; nothing reaching its agent over the network deletes from it. */
    offsite: z.boolean(),
  })
  .strict();
export type BackupStoreConfig = z.infer<typeof BackupStoreConfigSchema>;

/** What a store's host reports of it. */
export const BackupStoreStatusSchema = z
  .object({
    name,
    offsite: z.boolean(),
    /** The key fingerprint the store is bound to (set by its first snapshot); absent: empty store. */
    keyFingerprint: KeyFingerprintSchema.optional(),
    snapshots: z.number().int().min(0),
    chunks: z.number().int().min(0),
    /** Bytes the chunks take on disk, and the filesystem's free bytes under the store. */
    storedBytes: z.number().int().min(0),
    freeBytes: z.number().int().min(0),
  })
  .strict();
export type BackupStoreStatus = z.infer<typeof BackupStoreStatusSchema>;

/** Where an agent reaches a store: the store's host, its agent's URL (mutual TLS, host certificates) and name. */
export const StoreLocationSchema = z
  .object({
    store: name,
    host: name,
    /** `https://addr:port` of the store host's agent (`http://` only in tests without TLS). */
    agent: z.string().regex(/^https?:\/\/[\w.-]+:\d{1,5}$/),
  })
  .strict();
export type StoreLocation = z.infer<typeof StoreLocationSchema>;

/** What a verify found: each problem names the snapshot and the chunk. */
export const VerifyResultSchema = z
  .object({
    store: name,
    snapshots: z.number().int().min(0),
    chunksChecked: z.number().int().min(0),
    bytesRead: z.number().int().min(0),
    /** `deep`: chunks were decrypted and their ids recomputed (needs the key); else checksums only. */
    deep: z.boolean(),
    problems: z
      .array(
        z
          .object({
            snapshot: SnapshotIdSchema.optional(),
            chunk: ChunkIdSchema.optional(),
            problem: z.string().max(500),
          })
          .strict(),
      )
      .max(1000),
  })
  .strict();
export type VerifyResult = z.infer<typeof VerifyResultSchema>;

/** What a garbage collection did. */
export const GcResultSchema = z
  .object({
    store: name,
    chunksKept: z.number().int().min(0),
    chunksRemoved: z.number().int().min(0),
    bytesFreed: z.number().int().min(0),
    /** Unreferenced chunks kept because they are younger than the grace period. */
    chunksInGrace: z.number().int().min(0),
  })
  .strict();
export type GcResult = z.infer<typeof GcResultSchema>;

/** What an offsite pull did: only chunks the offsite store lacked crossed. */
export const PullResultSchema = z
  .object({
    store: name,
    from: name,
    snapshotsPulled: z.array(SnapshotIdSchema).max(BACKUP_SNAPSHOTS_LIST_MAX),
    chunksFetched: z.number().int().min(0),
    bytesFetched: z.number().int().min(0),
    chunksAlreadyThere: z.number().int().min(0),
  })
  .strict();
export type PullResult = z.infer<typeof PullResultSchema>;

// ---- Agent jobs (backup run, restore) ---------------------------------------------------------------------------

export const BackupJobStates = ['running', 'succeeded', 'failed'] as const;

/** A long backup or restore job on an agent, polled by the controller. */
export const BackupJobSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9-]{1,64}$/),
    kind: z.enum(['backup', 'restore', 'file-restore', 'verify', 'pull']),
    state: z.enum(BackupJobStates),
    startedAt: z.string().datetime(),
    finishedAt: z.string().datetime().optional(),
    /** Bytes done of bytes to do (reading for a backup, writing for a restore). */
    progress: z.object({ done: z.number().int().min(0), total: z.number().int().min(0) }).strict(),
    /** A backup's summary when it succeeded. */
    snapshot: SnapshotSummarySchema.optional(),
    /** A restore's figures when it succeeded. */
    restored: z
      .object({
        disks: z.array(z.object({ name, bytesWritten: z.number().int().min(0) }).strict()),
        seconds: z.number().min(0),
      })
      .strict()
      .optional(),
    /** A file restore's content (base64, at most BACKUP_FILE_RESTORE_MAX_BYTES). */
    file: z
      .object({
        path: z.string().max(4096),
        size: z.number().int().min(0).max(BACKUP_FILE_RESTORE_MAX_BYTES),
        data: z.string().max(Math.ceil(BACKUP_FILE_RESTORE_MAX_BYTES / 3) * 4),
      })
      .strict()
      .optional(),
    verify: VerifyResultSchema.optional(),
    pull: PullResultSchema.optional(),
    /** Why it failed, for an operator (the error's message; its kind in `errorKind`). */
    error: z.string().max(2000).optional(),
    errorKind: z.string().max(64).optional(),
    /** Notes worth showing (a full read and why, an unfrozen guest). */
    notes: z.array(z.string().max(500)).max(32).default([]),
  })
  .strict();
export type BackupJob = z.infer<typeof BackupJobSchema>;

// ---- Retention -------------------------------------------------------------------------------------------------------

const keep = z.number().int().min(0).max(10_000).optional();

/** Retention rules, as `restic forget --keep-*` with the same numbers (a snapshot kept by any rule is kept). */
export const RetentionRulesSchema = z
  .object({ last: keep, hourly: keep, daily: keep, weekly: keep, monthly: keep, yearly: keep })
  .strict()
  .refine(
    (r) => Object.values(r).some((n) => n !== undefined && n > 0),
    'keeps nothing: give at least one of last, hourly, daily, weekly, monthly, yearly above 0',
  );
export type RetentionRules = z.infer<typeof RetentionRulesSchema>;

// ---- Policies' objectives ------------------------------------------------------------------------------------------

/** One objective's state: `ok`, `drift` (checked and failed) or `unknown` (not measurable yet, e.g. no restore test). */
export const ObjectiveStates = ['ok', 'drift', 'unknown'] as const;

/** A policy's objectives as `vmlink backup status` shows them, per VM. */
export const ObjectiveStatusSchema = z
  .object({
    policy: name,
    vm: name,
    rpo: z
      .object({
        state: z.enum(ObjectiveStates),
        objectiveMinutes: z.number().min(0).optional(),
        /** Age of the newest good snapshot (absent: none). */
        newestAgeMinutes: z.number().min(0).optional(),
        newest: SnapshotIdSchema.optional(),
      })
      .strict(),
    rto: z
      .object({
        state: z.enum(ObjectiveStates),
        objectiveMinutes: z.number().min(0).optional(),
        /** The last restore test's measured time to the guest agent answering, and when. */
        measuredMinutes: z.number().min(0).optional(),
        measuredAt: z.string().datetime().optional(),
      })
      .strict(),
    rule: z
      .object({
        state: z.enum(ObjectiveStates),
        rule: z.enum(['3-2-1', 'none']),
        /** Copies of the newest snapshot's data: the live VM plus every store holding that snapshot. */
        copies: z.number().int().min(0),
        machines: z.number().int().min(0),
        offsite: z.number().int().min(0),
        stores: z.array(name),
      })
      .strict(),
    /** Last verify of the newest snapshot failed (named), else absent. */
    verifyProblem: z.string().max(500).optional(),
    /** One line per drift, for an operator. */
    problems: z.array(z.string().max(500)),
  })
  .strict();
export type ObjectiveStatus = z.infer<typeof ObjectiveStatusSchema>;

/** Event kinds the backup manager writes (events carry the policy, VM and snapshot). */
export const BackupEventKinds = [
  'backup.succeeded',
  'backup.failed',
  'backup.pruned',
  'backup.synced',
  'backup.verify-failed',
  'backup.restore-tested',
  'backup.restore-test-failed',
  'backup.objective-drift', // an objective went from ok/unknown to drift
  'backup.objective-ok', // back to ok
] as const;
export type BackupEventKind = (typeof BackupEventKinds)[number];
