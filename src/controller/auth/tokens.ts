// API tokens for people and scripts: `vmlt_<id>_<secret>`. The id (public) finds the record; the secret is 256
// random bits of which the controller keeps only the SHA-256. A slow KDF (bcrypt, scrypt) protects guessable
// passwords; a 256-bit random secret cannot be guessed, so a fast hash already makes a stolen database useless for
// logging in, and lets every request be checked in microseconds.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { ConflictError, InvalidRequestError, NotFoundError, UnauthorizedError } from '../../shared/errors.js';
import { API_TOKENS_MAX, TOKEN_LAST_USED_RESOLUTION_MS } from '../../shared/limits.js';
import { SerialQueue } from '../../shared/queue.js';
import type { Store } from '../store/types.js';
import type { Role, TokenInfo, TokenScopes } from '../wire-access.js';

/** Prefix of every API token, so that one pasted somewhere is recognisable (and found by secret scanners). */
export const TOKEN_PREFIX = 'vmlt_';
const TOKEN_PATTERN = /^vmlt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const RECORD_KEY = 'auth/tokens/';
// Last use lives under its own key: a late write of it can never bring back a token that was revoked meanwhile.
const USED_KEY = 'auth/token-used/';

/** A token as the store keeps it: its record and the hex SHA-256 of its secret, never the secret. */
interface StoredToken extends Omit<TokenInfo, 'lastUsedAt'> {
  hash: string;
}

/** Who made a request, as far as authorization is concerned. */
export interface Principal {
  /** A token's name, `bootstrap-token` or `local-socket`. */
  who: string;
  role: Role;
  scopes: TokenScopes;
}

/** Whether `bearer` looks like an API token (as opposed to the bootstrap token). */
export const isApiToken = (bearer: string) => bearer.startsWith(TOKEN_PREFIX);

const sha256 = (s: string) => createHash('sha256').update(s).digest();

/** The API tokens the controller knows, in its store under `auth/`. */
export class TokenStore {
  // Creations run one at a time, so two requests cannot both take a free name.
  private readonly creations = new SerialQueue();
  private readonly lastWrite = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Makes a token; the answer holds its secret, which is shown this once and kept nowhere. */
  create(
    req: { name: string; role: Role; scopes: TokenScopes; expiresInSeconds?: number | undefined },
    createdBy: string,
  ): Promise<TokenInfo & { token: string }> {
    return this.creations.run(async () => {
      const all = await this.records();
      if (all.some((t) => t.name === req.name))
        throw new ConflictError(
          `an API token named ${req.name} exists; revoke it first or pick another name`,
          `token/${req.name}`,
        );
      if (all.length >= API_TOKENS_MAX)
        throw new InvalidRequestError(
          `the controller keeps at most ${API_TOKENS_MAX} API tokens; revoke some`,
        );
      const id = randomBytes(8).toString('hex');
      const secret = randomBytes(32).toString('base64url');
      const now = this.now();
      const record: StoredToken = {
        name: req.name,
        id,
        role: req.role,
        scopes: req.scopes,
        createdAt: now.toISOString(),
        createdBy,
        ...(req.expiresInSeconds
          ? { expiresAt: new Date(now.getTime() + req.expiresInSeconds * 1000).toISOString() }
          : {}),
        hash: sha256(secret).toString('hex'),
      };
      await this.store.put(RECORD_KEY + id, record);
      return { ...info(record), token: `${TOKEN_PREFIX}${id}_${secret}` };
    });
  }

  /** Every token, by name, without secrets or hashes. */
  async list(): Promise<TokenInfo[]> {
    const used = new Map(
      (await this.store.list<string>(USED_KEY)).map((u) => [u.key.slice(USED_KEY.length), u.value]),
    );
    return (await this.records())
      .map((t) => ({ ...info(t), ...(used.has(t.id) ? { lastUsedAt: used.get(t.id)! } : {}) }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Revokes the token named `name`: it stops working at once. */
  async revoke(name: string): Promise<TokenInfo> {
    const t = (await this.records()).find((r) => r.name === name);
    if (!t) throw new NotFoundError('API token', name);
    await this.store.delete(RECORD_KEY + t.id);
    await this.store.delete(USED_KEY + t.id);
    this.lastWrite.delete(t.id);
    return info(t);
  }

  /** The principal of an API token, or `UnauthorizedError` saying why not (without echoing the token). */
  async authenticate(token: string): Promise<Principal> {
    const m = TOKEN_PATTERN.exec(token);
    if (!m) throw new UnauthorizedError('malformed API token (expected vmlt_<id>_<secret>)');
    const [, id, secret] = m as unknown as [string, string, string];
    const t = await this.store.get<StoredToken>(RECORD_KEY + id);
    // Hash even when the id is unknown, so an unknown id and a wrong secret take the same time.
    const presented = sha256(secret);
    const expected = t ? Buffer.from(t.hash, 'hex') : sha256('');
    if (!t || expected.length !== presented.length || !timingSafeEqual(presented, expected))
      throw new UnauthorizedError('unknown or revoked API token');
    const now = this.now();
    if (t.expiresAt && Date.parse(t.expiresAt) <= now.getTime())
      throw new UnauthorizedError(`API token ${t.name} expired at ${t.expiresAt}`, `token/${t.name}`);
    await this.touch(id, now);
    return { who: t.name, role: t.role, scopes: t.scopes };
  }

  /** Records `id`'s last use, at most once per resolution period (a busy script does not write on every call). */
  private async touch(id: string, now: Date): Promise<void> {
    const last = this.lastWrite.get(id);
    if (last !== undefined && now.getTime() - last < TOKEN_LAST_USED_RESOLUTION_MS) return;
    this.lastWrite.set(id, now.getTime());
    await this.store.put(USED_KEY + id, now.toISOString());
  }

  private async records(): Promise<StoredToken[]> {
    return (await this.store.list<StoredToken>(RECORD_KEY)).map((r) => r.value);
  }
}

/** What may be shown of a stored token. */
function info(t: StoredToken): TokenInfo {
  const { hash: _hash, ...shown } = t;
  return shown;
}
