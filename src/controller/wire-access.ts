// Wire types of the controller's access routes: API tokens and their roles and scopes (`vmlink token ...`), the
// audit trail (`vmlink audit`) and secrets (`vmlink secret ...`: values go in, never out).
import { z } from 'zod';
import { AUDIT_ENTRIES_MAX, TOKEN_SCOPE_ENTRIES_MAX } from '../shared/limits.js';
import { NAME_PATTERN } from '../spec/schema.js';
import { SecretValueBase64Schema } from '../spec/schema-primitives.js';

// API tokens and the audit trail (`vmlink token ...`, `vmlink audit`).

/** Roles of API tokens, weakest first: each may do what the ones before it may. */
export const ROLES = ['read-only', 'operator', 'admin'] as const;
/** A role of an API token. */
export const RoleSchema = z.enum(ROLES);
/** A role of an API token. */
export type Role = z.infer<typeof RoleSchema>;

/** Names of tokens: they appear in the audit trail and in `token revoke NAME`. */
export const TOKEN_NAME_PATTERN = /^[a-z][a-z0-9._-]{0,62}$/;
const tokenName = z
  .string()
  .regex(
    TOKEN_NAME_PATTERN,
    'must match ^[a-z][a-z0-9._-]{0,62}$ (lower-case letter, then a-z, 0-9, ., _, -)',
  );
/** One entry of a scope: a spec object name, or a glob of one (`*` any run of characters, `?` one). */
const scopeEntries = z
  .array(
    z.string().regex(/^[a-z0-9*?-]{1,31}$/, 'must be an object name or a glob of one (a-z, 0-9, -, *, ?)'),
  )
  .min(1)
  .max(TOKEN_SCOPE_ENTRIES_MAX);
/** The objects a token is limited to, per kind; a kind left out is not limited. */
export const TokenScopesSchema = z
  .object({ hosts: scopeEntries.optional(), networks: scopeEntries.optional(), vms: scopeEntries.optional() })
  .strict();
/** The objects a token is limited to. */
export type TokenScopes = z.infer<typeof TokenScopesSchema>;

/** A scope as messages and `vmlink token list` show it: `hosts=h1,h2 vms=web*`, or `all`. */
export function scopeText(s: TokenScopes): string {
  const kinds = ['hosts', 'networks', 'vms'] as const;
  return (
    kinds
      .filter((k) => s[k])
      .map((k) => `${k}=${s[k]!.join(',')}`)
      .join(' ') || 'all'
  );
}

/** Body of `POST /v1/tokens`. */
export const TokenCreateBodySchema = z
  .object({
    name: tokenName,
    role: RoleSchema,
    scopes: TokenScopesSchema.default({}),
    /** Lifetime; none: valid until revoked. */
    expiresInSeconds: z
      .number()
      .int()
      .min(60)
      .max(10 * 365 * 86_400)
      .optional(),
  })
  .strict();
/** Params of `DELETE /v1/tokens/:name`. */
export const TokenParamsSchema = z.object({ name: tokenName }).strict();

/** What the controller shows of a token: never its secret (it keeps only a hash). */
export const TokenInfoSchema = z.object({
  name: z.string(),
  id: z.string(),
  role: RoleSchema,
  scopes: TokenScopesSchema,
  createdAt: z.string(),
  createdBy: z.string(),
  expiresAt: z.string().optional(),
  lastUsedAt: z.string().optional(),
});
/** What the controller shows of a token. */
export type TokenInfo = z.infer<typeof TokenInfoSchema>;
/** Tokens, by name. */
export const TokenListSchema = z.array(TokenInfoSchema);
/** A new token: its secret (shown this once) and its record. */
export const TokenCreatedSchema = TokenInfoSchema.extend({ token: z.string() });

/** Query of `GET /v1/audit`. */
export const AuditQuerySchema = z
  .object({
    since: z.iso.datetime().optional(),
    limit: z.coerce.number().int().min(1).max(AUDIT_ENTRIES_MAX).default(100),
  })
  .strict();
/** One audited API call: who, from where, what, and how it ended. Never a request body. */
export const AuditEntrySchema = z.object({
  id: z.number(),
  time: z.string(),
  /** A token's name, `bootstrap-token`, `local-socket`, or `anonymous` (refused, or an open route). */
  who: z.string(),
  role: RoleSchema.optional(),
  remote: z.string(),
  method: z.string(),
  /** The route pattern (`/v1/vms/:name/start`), or the path when no route matched. */
  route: z.string(),
  /** The object the call named (a VM, network, host, token or task), if any. */
  object: z.string().optional(),
  status: z.number(),
  errorKind: z.string().optional(),
  durationMs: z.number(),
  /**
   * A call answered 202 started a task: its entry names the task, and a second entry with `outcome` follows when the
   * task ends (its status then 200, or the failure's HTTP status; durationMs the task's run time).
   */
  task: z.string().optional(),
  outcome: z.enum(['succeeded', 'failed', 'cancelled']).optional(),
});
/** One audited API call. */
export type AuditEntry = z.infer<typeof AuditEntrySchema>;
/** Audit entries, oldest first. */
export const AuditListSchema = z.array(AuditEntrySchema);

/** `:name` of the secret routes. */
export const SecretParamsSchema = z.object({ name: z.string().regex(NAME_PATTERN) }).strict();

/** Body of `POST /v1/secrets/:name`: the value, base64 (any bytes; the CLI reads them from stdin or a file). */
export const SecretSetBodySchema = z
  .object({
    value: SecretValueBase64Schema,
  })
  .strict();

/** Answer of `POST /v1/secrets/:name`: never the value. */
export const SecretSetAnswerSchema = z.object({ name: z.string(), created: z.boolean() }).strict();

/** `GET /v1/secrets`: names, dates and users, never values. */
export const SecretListSchema = z.array(
  z
    .object({
      name: z.string(),
      created: z.string(),
      updated: z.string(),
      usedBy: z.array(z.string()).describe('spec objects of the applied spec that use it'),
    })
    .strict(),
);
