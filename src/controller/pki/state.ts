// The CA's records in one 0600 JSON file: each host's current serial, the revoked serials, and the join tokens
// (only their hashes). One controller process owns the file; every change is written atomically.
import { z } from 'zod';
import { BadResponseError } from '../../shared/errors.js';
import { readFileCappedSync, writeFileAtomicSync } from '../../shared/state-file.js';

const Iso = z.string().max(40);
const Hex = z.string().regex(/^[0-9a-f]{1,64}$/);

const PkiStateSchema = z
  .object({
    hosts: z.record(z.string().max(64), z.object({ serial: Hex, notAfter: Iso }).strict()),
    revoked: z.array(
      z
        .object({
          serial: Hex,
          host: z.string().max(64),
          at: Iso,
          reason: z.string().max(200),
          notAfter: Iso,
        })
        .strict(),
    ),
    joinTokens: z.array(
      z.object({ hash: Hex, host: z.string().max(64), expiresAt: Iso, usedAt: Iso.optional() }).strict(),
    ),
  })
  .strict();

/** What the CA remembers. */
export type PkiState = z.infer<typeof PkiStateSchema>;

const EMPTY: PkiState = { hosts: {}, revoked: [], joinTokens: [] };

/** The state file, read fresh on every call (it is small) and rewritten whole. */
export class PkiStateStore {
  constructor(private readonly path: string) {}

  /** The records; empty before the first write. */
  read(): PkiState {
    const text = readFileCappedSync(this.path, { maxBytes: 8 * 1024 * 1024 });
    if (text === undefined) return structuredClone(EMPTY);
    const r = PkiStateSchema.safeParse(JSON.parse(text));
    if (!r.success)
      throw new BadResponseError(`${this.path} is damaged: ${r.error.issues[0]!.message}`, this.path);
    return r.data;
  }

  /** Applies `change` to the records and writes them, dropping entries past their expiry (TLS refuses those anyway). */
  update(change: (s: PkiState) => void): void {
    const s = this.read();
    change(s);
    const now = Date.now();
    s.revoked = s.revoked.filter((r) => new Date(r.notAfter).getTime() > now);
    // Expired tokens stay a day, so that using one late is refused as expired rather than as unknown.
    s.joinTokens = s.joinTokens.filter((t) => new Date(t.expiresAt).getTime() > now - 86_400_000);
    writeFileAtomicSync(this.path, `${JSON.stringify(s, null, 1)}\n`, { mode: 0o600 });
  }
}
