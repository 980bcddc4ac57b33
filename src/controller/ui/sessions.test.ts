import { describe, expect, it } from 'vitest';
import type { Principal } from '../auth/tokens.js';
import {
  LOGIN_LINK_TTL_MS,
  LOGIN_LINKS_MAX,
  SESSION_IDLE_MS,
  SESSION_TTL_MS,
  SESSIONS_MAX,
  sessionCookie,
  setSessionCookie,
  UiSessions,
} from './sessions.js';

const operator: Principal = { who: 'alice', role: 'operator', scopes: { vms: ['web*'] } };

/** Sessions on a clock the test moves. */
function clocked() {
  let now = 1_000_000;
  const s = new UiSessions(() => now);
  return { s, tick: (ms: number) => (now += ms) };
}

describe('login links', () => {
  it('open one session carrying the role and scopes of who asked, once', () => {
    const { s } = clocked();
    const link = s.createLink(operator);
    expect(link.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const session = s.redeem(link.token);
    expect(s.authenticate(session.id)).toEqual(operator);
    expect(session.info).toMatchObject({ who: 'alice', role: 'operator' });
    expect(() => s.redeem(link.token)).toThrow(/unknown, used or expired/);
  });

  it('expire after 60 s, and a refused link is spent too', () => {
    const { s, tick } = clocked();
    const late = s.createLink(operator);
    tick(LOGIN_LINK_TTL_MS - 1);
    const inTime = s.createLink(operator);
    tick(1);
    expect(() => s.redeem(late.token)).toThrow(/expired/);
    expect(s.redeem(inTime.token).id).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('refuse a malformed token as invalid and an unknown one as unauthorized', () => {
    const { s } = clocked();
    expect(() => s.redeem('x')).toThrow(expect.objectContaining({ kind: 'invalid' }));
    expect(() => s.redeem('a'.repeat(43))).toThrow(expect.objectContaining({ kind: 'unauthorized' }));
  });

  it('are bounded: the oldest unused link goes first', () => {
    const { s } = clocked();
    const first = s.createLink(operator);
    for (let i = 0; i < LOGIN_LINKS_MAX; i++) s.createLink(operator);
    expect(() => s.redeem(first.token)).toThrow(/unknown/);
  });
});

describe('browser sessions', () => {
  it('end when idle for an hour, and at 12 h whatever their use', () => {
    const { s, tick } = clocked();
    const idle = s.redeem(s.createLink(operator).token);
    const busy = s.redeem(s.createLink(operator).token);
    tick(SESSION_IDLE_MS - 1000);
    s.authenticate(busy.id);
    tick(1000);
    expect(() => s.authenticate(idle.id)).toThrow(/expired/);
    for (let t = SESSION_IDLE_MS; t < SESSION_TTL_MS - SESSION_IDLE_MS; t += SESSION_IDLE_MS / 2) {
      tick(SESSION_IDLE_MS / 2);
      s.authenticate(busy.id);
    }
    tick(SESSION_IDLE_MS);
    expect(() => s.authenticate(busy.id)).toThrow(/expired/);
  });

  it('end at logout and when their maker is revoked', () => {
    const { s } = clocked();
    const a = s.redeem(s.createLink(operator).token);
    const b = s.redeem(s.createLink(operator).token);
    const other = s.redeem(s.createLink({ ...operator, who: 'bob' }).token);
    s.end(a.id);
    expect(() => s.authenticate(a.id)).toThrow(/logged out/);
    expect(s.endAllOf('alice')).toBe(1);
    expect(() => s.authenticate(b.id)).toThrow(/unknown/);
    expect(s.authenticate(other.id).who).toBe('bob');
  });

  it('are bounded: the least recently used goes first', () => {
    const { s } = clocked();
    const ids = Array.from({ length: SESSIONS_MAX }, () => s.redeem(s.createLink(operator).token).id);
    s.authenticate(ids[0]!);
    s.redeem(s.createLink(operator).token);
    expect(s.authenticate(ids[0]!).who).toBe('alice');
    expect(() => s.authenticate(ids[1]!)).toThrow();
    expect(s.size).toBe(SESSIONS_MAX);
  });
});

describe('the session cookie', () => {
  it('is HttpOnly, Secure and SameSite=Strict, and read among other cookies', () => {
    expect(setSessionCookie('abc', 60)).toBe(
      'vmlink_session=abc; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=60',
    );
    expect(sessionCookie('a=1; vmlink_session=xyz; b=2')).toBe('xyz');
    expect(sessionCookie('a=1')).toBeUndefined();
    expect(sessionCookie(undefined)).toBeUndefined();
    expect(sessionCookie(`vmlink_session=${'x'.repeat(9000)}`)).toBeUndefined();
  });
});
