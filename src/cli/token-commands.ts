// `vmlink token create|list|revoke` and `vmlink audit`: API tokens for people and scripts, and the trail of what
// they (and everyone else) changed. Both need an admin: the root-only socket, VMLINK_TOKEN, or an admin API token.
import { type Command, Option } from 'commander';
import {
  AuditListSchema,
  ROLES,
  type Role,
  scopeText,
  TokenCreatedSchema,
  TokenInfoSchema,
  TokenListSchema,
  type TokenScopes,
} from '../controller/wire-access.js';
import { VmlinkError } from '../shared/errors.js';
import { parseDuration } from './host-commands.js';
import { type Api, emit } from './io.js';
import { table } from './render.js';

const SCOPE_KINDS = ['hosts', 'networks', 'vms'] as const;

/** Scopes from repeated `--scope KIND=a,b` options (a kind given twice adds up). */
export function parseScopes(values: readonly string[]): TokenScopes {
  const scopes: TokenScopes = {};
  for (const v of values) {
    const m = v.match(/^(hosts|networks|vms)=(.+)$/);
    if (!m)
      throw new VmlinkError(
        'invalid',
        `--scope must be KIND=NAME[,NAME...] with KIND one of ${SCOPE_KINDS.join(', ')}, got ${v}`,
      );
    const kind = m[1] as (typeof SCOPE_KINDS)[number];
    scopes[kind] = [...(scopes[kind] ?? []), ...m[2]!.split(',').filter(Boolean)];
  }
  return scopes;
}

/** `--since`: an ISO time, or a duration back from now (`1h`, `7d`). */
export function parseSince(text: string, now = Date.now()): string {
  if (/^\d+\s*[smhd]?$/.test(text.trim()))
    return new Date(now - parseDuration(text, '--since') * 1000).toISOString();
  const t = Date.parse(text);
  if (Number.isNaN(t))
    throw new VmlinkError(
      'invalid',
      `--since must be a time (2026-01-31T12:00:00Z) or a duration (1h, 7d), got ${text}`,
    );
  return new Date(t).toISOString();
}

/** `vmlink token ...` and `vmlink audit`. */
export function addTokenCommands(program: Command, api: Api): void {
  const token = program
    .command('token')
    .description('API tokens for people and scripts (admin only): create, list, revoke');
  token
    .command('create')
    .description('make an API token and print its secret (shown once: the controller keeps only a hash)')
    .argument('<name>', 'a name for the token (who or what uses it): shown in the audit trail')
    .addOption(new Option('--role <role>', 'what it may do').choices(ROLES).makeOptionMandatory())
    .option(
      '--scope <kind=names>',
      'limit it to named objects: hosts=h1,h2, networks=..., vms=web* (globs * and ?); repeatable',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--expires <duration>', 'lifetime such as 12h or 30d (default: until revoked)')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { role: Role; scope: string[]; expires?: string; json?: boolean }) => {
      const r = await api().post(
        '/v1/tokens',
        {
          name,
          role: o.role,
          scopes: parseScopes(o.scope),
          ...(o.expires ? { expiresInSeconds: parseDuration(o.expires, '--expires') } : {}),
        },
        TokenCreatedSchema,
      );
      emit(!!o.json, r, () =>
        [
          `API token ${r.name} (role ${r.role}, scope ${scopeText(r.scopes)}, ${r.expiresAt ? `expires ${r.expiresAt}` : 'no expiry'}):`,
          `  ${r.token}`,
          'It is shown only now. Use it as VMLINK_TOKEN with VMLINK_SOCKET=https://CONTROLLER:PORT and VMLINK_CA.',
        ].join('\n'),
      );
    });
  token
    .command('list')
    .description('API tokens: name, role, scope, created, expiry, last use (never their secrets)')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api().get('/v1/tokens', TokenListSchema);
      emit(!!o.json, r, () =>
        table(
          ['name', 'role', 'scope', 'created', 'by', 'expires', 'last used'],
          r.map((t) => [
            t.name,
            t.role,
            scopeText(t.scopes),
            t.createdAt,
            t.createdBy,
            t.expiresAt ?? 'never',
            t.lastUsedAt ?? 'never',
          ]),
        ),
      );
    });
  token
    .command('revoke')
    .description('revoke an API token: it stops working at once')
    .argument('<name>', 'the token name')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await api().delete(`/v1/tokens/${encodeURIComponent(name)}`, TokenInfoSchema);
      emit(!!o.json, r, () => `API token ${r.name} revoked`);
    });

  program
    .command('audit')
    .description(
      'the audit trail: every mutating API call, refused ones included, and the outcome of each task one started (admin only)',
    )
    .option('--since <time>', 'from this time (ISO) or this long ago (1h, 7d)')
    .option('-n, --limit <n>', 'at most this many, the newest', '100')
    .option('--json', 'machine-readable output')
    .action(async (o: { since?: string; limit: string; json?: boolean }) => {
      const q = new URLSearchParams({ limit: String(Number(o.limit)) });
      if (o.since) q.set('since', parseSince(o.since));
      const r = await api().get(`/v1/audit?${q}`, AuditListSchema);
      emit(!!o.json, r, () =>
        table(
          ['time', 'who', 'from', 'call', 'object', 'result', 'ms'],
          r.map((e) => [
            e.time,
            e.who,
            e.remote,
            `${e.method} ${e.route}`,
            e.object,
            `${e.outcome ? `${e.outcome} ` : ''}${e.errorKind ? `${e.status} ${e.errorKind}` : e.status}`,
            e.durationMs,
          ]),
        ),
      );
    });
}
