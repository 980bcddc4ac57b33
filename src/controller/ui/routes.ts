// The web console's routes: its files at /ui/, the one-time login link and the session it opens, the localhost
// listener `vmlink ui` asks for, and (through their own modules) the console and event streams.
import websocket from '@fastify/websocket';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { STREAM_MAX_PAYLOAD_BYTES } from '../../shared/console-wire.js';
import { toErrorBody, UnsupportedError } from '../../shared/errors.js';
import { answers } from '../api-answers.js';
import { principalOf } from '../auth/access.js';
import type { AuditLog } from '../auth/audit.js';
import {
  LoginLinkSchema,
  type UiListenerAnswer,
  UiListenerBodySchema,
  UiListenerSchema,
  UiSessionSchema,
} from '../wire-ui.js';
import { DEFAULT_WEB_DIR, securityHeaders, sendAsset } from './assets.js';
import { addConsoleStreamRoute, type ConsoleProxyDeps } from './console-proxy.js';
import { addEventsStreamRoute, type EventFeed } from './events-stream.js';
import { clearSessionCookie, sessionCookie, setSessionCookie, type UiSessions } from './sessions.js';

/** Starts (once) the localhost TLS listener, or names the TCP listener the controller has. */
export type EnsureUiListener = (port: number | undefined) => Promise<UiListenerAnswer>;

/** What the console's routes need. */
export interface UiRouteDeps extends ConsoleProxyDeps {
  sessions: UiSessions;
  feed: EventFeed;
  audit: AuditLog;
  /** Absent: this controller cannot start a listener (tests, a standby without one). */
  ensureListener?: EnsureUiListener | undefined;
  /** Where the built app is (default `dist/web/`). */
  webDir?: string | undefined;
}

/** Adds the web console's routes to `app`. */
export async function addUiRoutes(app: FastifyInstance, deps: UiRouteDeps): Promise<void> {
  if (!app.hasDecorator('websocketServer'))
    await app.register(websocket, { options: { maxPayload: STREAM_MAX_PAYLOAD_BYTES } });
  addConsoleStreamRoute(app, deps);
  addEventsStreamRoute(app, deps.feed);
  const webDir = deps.webDir ?? DEFAULT_WEB_DIR;
  const api = app.withTypeProvider<ZodTypeProvider>();

  api.get('/ui', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/ui/', 301));
  api.get('/ui/', { schema: { hide: true } }, async (_req, reply) => sendAsset(reply, webDir, ''));
  api.get('/ui/*', { schema: { hide: true } }, async (req, reply) =>
    sendAsset(reply, webDir, (req.params as { '*': string })['*']),
  );
  // The login page: spends the link on a session cookie, then moves on to the console (a page, not a redirect, so
  // the navigation to /ui/ starts from this origin and the SameSite=Strict cookie goes with it).
  api.get(
    '/ui/login',
    { schema: { hide: true, querystring: z.object({ t: z.string().max(100) }).strict() } },
    async (req, reply) => {
      securityHeaders(reply);
      void reply.header('cache-control', 'no-store').header('content-type', 'text/html; charset=utf-8');
      try {
        const s = deps.sessions.redeem(req.query.t);
        return reply
          .header('set-cookie', setSessionCookie(s.id, s.maxAgeSeconds))
          .send(page('Logged in', `Logged in as ${s.info.who} (${s.info.role}).`, '/ui/'));
      } catch (e) {
        const body = toErrorBody(e);
        return reply
          .status(body.error.kind === 'invalid' ? 400 : 401)
          .send(page('Login refused', body.error.message));
      }
    },
  );

  api.post(
    '/v1/ui/links',
    {
      schema: {
        summary: "A one-time login link (60 s) to the web console, carrying the caller's role",
        response: answers(LoginLinkSchema),
      },
    },
    async (req) => {
      const l = deps.sessions.createLink(principalOf(req)!);
      return { token: l.token, path: `/ui/login?t=${l.token}`, expiresAt: l.expiresAt };
    },
  );
  api.get(
    '/v1/ui/session',
    {
      schema: {
        summary: 'Who the caller is (the web console hides what its role may not do)',
        response: answers(UiSessionSchema),
      },
    },
    async (req) => {
      const id = sessionCookie(req.headers.cookie);
      const info = id === undefined || req.headers.authorization ? undefined : deps.sessions.info(id);
      const who = principalOf(req)!;
      return info ?? { who: who.who, role: who.role };
    },
  );
  api.post(
    '/v1/ui/logout',
    {
      schema: {
        summary: "End the caller's browser session",
        response: answers(z.object({ ok: z.literal(true) })),
      },
    },
    async (req, reply) => {
      const id = sessionCookie(req.headers.cookie);
      if (id !== undefined) deps.sessions.end(id);
      return reply.header('set-cookie', clearSessionCookie()).send({ ok: true as const });
    },
  );
  api.post(
    '/v1/ui/listener',
    {
      schema: {
        summary:
          'Start a TLS listener on 127.0.0.1 for the web console (when the controller has no TCP listener)',
        body: UiListenerBodySchema,
        response: answers(UiListenerSchema),
      },
    },
    async (req) => {
      if (!deps.ensureListener)
        throw new UnsupportedError('this controller cannot start a listener for the web console');
      return deps.ensureListener(req.body.port);
    },
  );
}

/** A minimal page (no script: the CSP allows none inline); `next` is where it moves on to. */
function page(title: string, text: string, next?: string): string {
  const esc = (s: string) =>
    s.replace(
      /[&<>"']/g,
      (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
    );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vmlink: ${esc(title)}</title>${
    next ? `<meta http-equiv="refresh" content="0; url=${esc(next)}">` : ''
  }</head>
<body><p>${esc(text)}</p>${next ? `<p><a href="${esc(next)}">Open the console</a></p>` : ''}</body></html>
`;
}
