// The spec's `backupStores:` and `backups:` (issue 12, docs/backup.md). Cross-references (hosts, VMs, secrets,
// networks) are checked in validate/backups.ts; this file checks each object alone.
import { z } from 'zod';
import { BACKUP_POLICIES_MAX, BACKUP_STORES_MAX, RetentionRulesSchema } from '../shared/backup.js';
import { InvalidRequestError } from '../shared/errors.js';
import { name } from './schema-primitives.js';

/** `every 10m`, `every 2h`, `every 1d`: from the policy's first run on, at that interval. */
export const EVERY_PATTERN = /^every ([1-9]\d{0,3})(m|h|d)$/;
/** `HH:MM-HH:MM` (UTC): once a day, started inside that window (a window may cross midnight). */
export const WINDOW_PATTERN = /^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$/;

/** A schedule: `every N(m|h|d)` or a daily window `HH:MM-HH:MM` in UTC. */
export const BackupScheduleSchema = z
  .string()
  .refine(
    (s) => EVERY_PATTERN.test(s) || (WINDOW_PATTERN.test(s) && s.slice(0, 5) !== s.slice(6)),
    'must be "every N" with m, h or d (e.g. "every 10m") or a daily UTC window "HH:MM-HH:MM" (e.g. "02:00-04:00")',
  );

const MINUTE = 60_000;

export type Schedule =
  | { kind: 'every'; intervalMs: number }
  /** Minutes after UTC midnight the window opens, and how long it stays open (1 .. 1439 minutes). */
  | { kind: 'window'; startMinute: number; lengthMinutes: number };

/** Parses a schedule (what BackupScheduleSchema accepts); anything else is an InvalidRequestError naming it. */
export function parseSchedule(schedule: string): Schedule {
  const every = EVERY_PATTERN.exec(schedule);
  if (every) {
    const unit = every[2] === 'm' ? MINUTE : every[2] === 'h' ? 60 * MINUTE : 1440 * MINUTE;
    return { kind: 'every', intervalMs: Number(every[1]) * unit };
  }
  const w = WINDOW_PATTERN.exec(schedule);
  if (w) {
    const start = Number(w[1]) * 60 + Number(w[2]);
    const end = Number(w[3]) * 60 + Number(w[4]);
    const length = (end - start + 1440) % 1440;
    if (length > 0) return { kind: 'window', startMinute: start, lengthMinutes: length };
  }
  throw new InvalidRequestError(
    `schedule "${schedule}" is neither "every N" with m, h or d (e.g. "every 10m") nor a daily UTC window "HH:MM-HH:MM" of distinct times`,
    'schedule',
  );
}

/** Retention, as `restic forget --keep-*` with the same numbers (a snapshot kept by any rule is kept). */
export const RetentionSchema = RetentionRulesSchema;

/** A backup store: a directory on a host whose agent serves it. */
export const BackupStoreSchema = z
  .object({
    name,
    /** The host holding it (a `role: storage` host, or a compute host). */
    host: name,
    /** Its directory there; default `<agent state dir>/backup-stores/<name>`. Must lie below the agent's pool root. */
    path: z
      .string()
      .regex(/^\/[\w./-]{1,200}$/, 'must be an absolute path of letters, digits, ., _, - and /')
      .refine((p) => !p.split('/').includes('..'), 'must not contain ..')
      .optional(),
    /**
     * An offsite copy: it pulls the snapshots of `pullFrom` (only chunks it lacks), and nothing that reaches its agent
     * over the network can delete or prune it (its own retention runs there); it counts as the 3-2-1 rule's offsite.
     */
    offsite: z.boolean().default(false),
    /** The store this one pulls from (an offsite store needs one). */
    pullFrom: name.optional(),
    /** Retention of an offsite store (applied by its own agent after each pull); default: the policies'. */
    retention: RetentionSchema.optional(),
  })
  .strict();

/** A backup policy: which VMs, where, when, how long, under which key, and the objectives checked. */
export const BackupPolicySchema = z
  .object({
    name,
    /** The VMs it backs up (`vms[].name`). */
    vms: z.array(name).min(1).max(1000),
    /** The store its backups go to (`backupStores[].name`, not an offsite one). */
    store: name,
    schedule: BackupScheduleSchema,
    retention: RetentionSchema,
    /** The controller-kept secret holding the 32-byte key (`vmlink backup key create NAME`). */
    encryption: z.object({ key: name }).strict(),
    /** Recovery point objective: the newest good snapshot is never older than this. */
    rpoMinutes: z.number().int().min(1).max(525_600).optional(),
    /** Recovery time objective: a restore test's measured time to the guest answering stays under this. */
    rtoMinutes: z.number().int().min(1).max(525_600).optional(),
    /** `3-2-1`: at least 3 copies (the VM and its snapshots), on at least 2 machines, at least 1 offsite. */
    rule: z.enum(['3-2-1', 'none']).default('none'),
    /** A scheduled restore-and-boot test: restores the newest snapshot as a throwaway VM on an isolated network. */
    restoreTest: z
      .object({
        schedule: BackupScheduleSchema,
        /** An `isolated` network the restored copy boots on (so it never meets the original). */
        network: name,
        /** Where it boots; default the VM's own host. */
        host: name.optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export const BackupStoresSchema = z.array(BackupStoreSchema).max(BACKUP_STORES_MAX).default([]);
export const BackupPoliciesSchema = z.array(BackupPolicySchema).max(BACKUP_POLICIES_MAX).default([]);

export type BackupStoreSpec = z.infer<typeof BackupStoreSchema>;
export type BackupPolicySpec = z.infer<typeof BackupPolicySchema>;
export type RetentionSpec = z.infer<typeof RetentionSchema>;
