// Join tokens: `vmlink host join NAME` makes a one-time, expiring token; an agent exchanges it (with a CSR) for its
// certificate. Only the secret's hash is stored; the token also carries the CA's fingerprint, which the agent pins.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { InvalidRequestError, UnauthorizedError } from '../../shared/errors.js';
import { JOIN_TOKEN_PREFIX, parseJoinToken } from '../../shared/join-wire.js';
import type { Issued, Pki } from './pki.js';
import { PkiStateStore } from './state.js';

/** How long a join token is valid unless the operator says otherwise (1 hour). */
export const DEFAULT_JOIN_TTL_MS = 3_600_000;
/** The longest a join token may live (24 hours). */
export const MAX_JOIN_TTL_MS = 86_400_000;

const hashOf = (secret: string) => createHash('sha256').update(secret).digest('hex');

/** A token as printed: `vmlink-join-1.<CA fingerprint>.<secret>`. */
export interface JoinToken {
  token: string;
  caFingerprint: string;
  expiresAt: string;
}

/** Join tokens of one CA. */
export class JoinTokens {
  private readonly state: PkiStateStore;

  constructor(
    private readonly pki: Pki,
    private readonly now: () => number = Date.now,
  ) {
    this.state = new PkiStateStore(`${pki.dir}/state.json`);
  }

  /** Makes a token that lets `host` join once within `ttlMs`. */
  create(host: string, ttlMs = DEFAULT_JOIN_TTL_MS): JoinToken {
    if (!Number.isInteger(ttlMs) || ttlMs < 1_000 || ttlMs > MAX_JOIN_TTL_MS)
      throw new InvalidRequestError(`a join token lives between 1 s and 24 h, not ${ttlMs} ms`);
    const secret = randomBytes(32).toString('base64url');
    const expiresAt = new Date(this.now() + ttlMs).toISOString();
    this.state.update((s) => {
      s.joinTokens.push({ hash: hashOf(secret), host, expiresAt });
    });
    const caFingerprint = this.pki.caFingerprint;
    return { token: `${JOIN_TOKEN_PREFIX}.${caFingerprint}.${secret}`, caFingerprint, expiresAt };
  }

  /**
   * Spends `token` for `host` and issues the certificate for `csr`: refused (unauthorized, naming the host and why)
   * when the token is unknown, for another host, expired or already used.
   */
  async redeem(host: string, token: string, csr: string): Promise<Issued> {
    const { secret } = parseJoinToken(token);
    const hash = Buffer.from(hashOf(secret), 'hex');
    const s = this.state.read();
    const entry = s.joinTokens.find((t) => timingSafeEqual(Buffer.from(t.hash, 'hex'), hash));
    const refuse = (why: string) =>
      new UnauthorizedError(`join of host ${host} refused: ${why}`, `host/${host}`);
    if (!entry) throw refuse('unknown join token (make one with `vmlink host join`)');
    if (entry.host !== host) throw refuse(`the token was made for host ${entry.host}`);
    if (entry.usedAt) throw refuse(`the token was already used at ${entry.usedAt}`);
    if (new Date(entry.expiresAt).getTime() <= this.now())
      throw refuse(`the token expired at ${entry.expiresAt}`);
    // Spent before the certificate is made: a second request with the same token never gets one.
    this.state.update((st) => {
      const e = st.joinTokens.find((t) => t.hash === entry.hash);
      if (e) e.usedAt = new Date(this.now()).toISOString();
    });
    return this.pki.issueForCsr(host, csr);
  }
}
