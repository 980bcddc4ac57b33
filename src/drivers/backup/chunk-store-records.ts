// The small records of the directory chunk store (chunk-store.ts): store.json, each snapshot's last verify, and the
// summary of a manifest as `list` shows it.
import { z } from 'zod';
import { KeyFingerprintSchema, type Manifest, type SnapshotSummary } from '../../shared/backup.js';

/** Most problems one snapshot's verify record keeps. */
export const RECORD_PROBLEMS_MAX = 100;

export const StoreFileSchema = z
  .object({ version: z.literal(1), keyFingerprint: KeyFingerprintSchema.optional() })
  .strict();
export type StoreFile = z.infer<typeof StoreFileSchema>;

export const VerifyRecordSchema = z
  .object({
    ok: z.boolean(),
    at: z.string().datetime(),
    problems: z.array(z.string().max(500)).max(RECORD_PROBLEMS_MAX),
  })
  .strict();
export type VerifyRecord = z.infer<typeof VerifyRecordSchema>;

/** The manifest as `list` shows it: without chunk ids, sealed config, signature; with its last verify. */
export function summaryOf(m: Manifest, verify: VerifyRecord | undefined): SnapshotSummary {
  const { version: _v, consistencyNote: _n, config: _c, signature: _s, disks, ...rest } = m;
  return {
    ...rest,
    disks: disks.map(({ chunks, chunkBytes: _b, ...d }) => ({ ...d, chunkCount: chunks.length })),
    ...(verify === undefined ? {} : { verify }),
  };
}
