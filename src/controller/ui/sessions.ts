// Browser sessions of the web console, in the controller's memory (a restart logs browsers out; nothing to steal
// from the store): a one-time login link (60 s, single use) made by an authenticated caller becomes a session cookie
// carrying that caller's role and scopes. Only SHA-256 hashes of links and session ids are kept, so a heap dump or a
// log line never holds a usable credential.
import { createHash, randomBytes } from 'node:crypto';
import { InvalidRequestError, UnauthorizedError } from '../../shared/errors.js';
import type { Principal } from '../auth/tokens.js';

/** How long a login link may be used. */
export const LOGIN_LINK_TTL_MS = 60_000;
/** A session's absolute lifetime. */
export const SESSION_TTL_MS = 12 * 3600_000;
/** A session unused this long ends. */
export const SESSION_IDLE_MS = 3600_000;
/** Unused login links kept at once (older ones are dropped first). */
export const LOGIN_LINKS_MAX = 64;
/** Sessions kept at once (the least recently used is dropped first). */
export const SESSIONS_MAX = 256;

/** The session cookie's name. */
export const SESSION_COOKIE = 'vmlink_session';
/** 256 random bits, base64url. */
const SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;

const hash = (s: string) => createHash('sha256').update(s).digest('hex');
const secret = () => randomBytes(32).toString('base64url');

interface Link {
  principal: Principal;
  expiresAt: number;
}

interface Session {
  principal: Principal;
  expiresAt: number;
  lastUsed: number;
}

/** What a caller may see of its session. */
export interface SessionInfo {
  who: string;
  role: Principal['role'];
  expiresAt: string;
}

/** Login links and browser sessions. */
export class UiSessions {
  // Maps keep insertion order: the first entry is the oldest link / least recently used session.
  private readonly links = new Map<string, Link>();
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A one-time login link's token for `principal` (who asked for it), valid for 60 s. */
  createLink(principal: Principal): { token: string; expiresAt: string } {
    this.prune();
    while (this.links.size >= LOGIN_LINKS_MAX) this.links.delete(this.links.keys().next().value!);
    const token = secret();
    const expiresAt = this.now() + LOGIN_LINK_TTL_MS;
    this.links.set(hash(token), { principal, expiresAt });
    return { token, expiresAt: new Date(expiresAt).toISOString() };
  }

  /** Spends a login link on a new session: its id (the cookie's value) and expiry. Used, expired, unknown: refused. */
  redeem(token: string): { id: string; maxAgeSeconds: number; info: SessionInfo } {
    if (!SECRET_PATTERN.test(token))
      throw new InvalidRequestError('malformed login link: ask `vmlink ui` for a new one');
    const key = hash(token);
    const link = this.links.get(key);
    // Spent before anything else: a link works once even when two requests race.
    this.links.delete(key);
    if (!link || link.expiresAt <= this.now())
      throw new UnauthorizedError(
        'this login link is unknown, used or expired (links work once, for 60 s): ask `vmlink ui` for a new one',
      );
    this.prune();
    while (this.sessions.size >= SESSIONS_MAX) this.sessions.delete(this.sessions.keys().next().value!);
    const id = secret();
    const now = this.now();
    const session = { principal: link.principal, expiresAt: now + SESSION_TTL_MS, lastUsed: now };
    this.sessions.set(hash(id), session);
    return { id, maxAgeSeconds: SESSION_TTL_MS / 1000, info: info(session) };
  }

  /** The principal of session cookie value `id`, or `UnauthorizedError` (unknown, logged out, expired, idle). */
  authenticate(id: string): Principal {
    const key = SECRET_PATTERN.test(id) ? hash(id) : undefined;
    const s = key ? this.sessions.get(key) : undefined;
    const now = this.now();
    if (!s || s.expiresAt <= now || now - s.lastUsed >= SESSION_IDLE_MS) {
      if (key) this.sessions.delete(key);
      throw new UnauthorizedError(
        'the browser session is unknown, logged out or expired: open a new login link from `vmlink ui`',
      );
    }
    s.lastUsed = now;
    // Most recently used last, so the bound drops the stalest first.
    this.sessions.delete(key!);
    this.sessions.set(key!, s);
    return s.principal;
  }

  /** What session `id` is (after `authenticate`). */
  info(id: string): SessionInfo | undefined {
    const s = SECRET_PATTERN.test(id) ? this.sessions.get(hash(id)) : undefined;
    return s ? info(s) : undefined;
  }

  /** Ends session `id` (logout). */
  end(id: string): void {
    if (SECRET_PATTERN.test(id)) this.sessions.delete(hash(id));
  }

  /** Ends every session and unused link made by `who` (its token was revoked). */
  endAllOf(who: string): number {
    let n = 0;
    for (const [k, s] of this.sessions)
      if (s.principal.who === who) {
        this.sessions.delete(k);
        n++;
      }
    for (const [k, l] of this.links) if (l.principal.who === who) this.links.delete(k);
    return n;
  }

  /** How many sessions are alive (tests, the doctor). */
  get size(): number {
    this.prune();
    return this.sessions.size;
  }

  private prune(): void {
    const now = this.now();
    for (const [k, l] of this.links) if (l.expiresAt <= now) this.links.delete(k);
    for (const [k, s] of this.sessions)
      if (s.expiresAt <= now || now - s.lastUsed >= SESSION_IDLE_MS) this.sessions.delete(k);
  }
}

function info(s: Session): SessionInfo {
  return { who: s.principal.who, role: s.principal.role, expiresAt: new Date(s.expiresAt).toISOString() };
}

/** The session cookie's value in a `Cookie` header, if any (the header is bounded; other cookies are ignored). */
export function sessionCookie(header: string | undefined): string | undefined {
  if (!header || header.length > 8192) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** `Set-Cookie` of a new session: only over HTTPS, never to scripts, never on a cross-site request. */
export const setSessionCookie = (id: string, maxAgeSeconds: number) =>
  `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${maxAgeSeconds}`;

/** `Set-Cookie` that removes the session cookie. */
export const clearSessionCookie = () =>
  `${SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0`;
