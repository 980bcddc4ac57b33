// The web console's files: `dist/web/` (built by scripts/build.mjs from web/) served at `/ui/` with a strict
// Content-Security-Policy (nothing from another origin, no inline script), immutable caching for content-hashed
// names and revalidation for the rest. A path is checked against a plain pattern (no `..`, no hidden names) and the
// file is opened without following a link.
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyReply } from 'fastify';
import { NotFoundError, UnavailableError } from '../../shared/errors.js';
import { openRegular } from '../../shared/safe-file.js';

/** Where the built app is: `dist/web/` of this checkout (from `src/controller/ui/` and `dist/controller/ui/` alike). */
export const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../../dist/web/', import.meta.url));

/**
 * The console's policy: scripts, styles, fonts, images and connections (fetch, websockets) from its own origin only;
 * styles may be inline because xterm.js sets element styles at run time (no inline script is ever allowed).
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** Headers of every page and file of the console. */
export function securityHeaders(reply: FastifyReply): void {
  void reply
    .header('content-security-policy', CONTENT_SECURITY_POLICY)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY')
    .header('cross-origin-opener-policy', 'same-origin');
}

/** Largest file served (the bundle with xterm.js is far below). */
const ASSET_MAX_BYTES = 32 * 1024 * 1024;
/** A path below /ui/: plain names, no hidden ones, no `..`. */
const ASSET_PATH = /^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\/){0,4}[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/;
/** esbuild's `[name]-[hash]` names: content-addressed, so cached for good. */
const HASHED = /-[A-Za-z0-9]{8,}\.[a-z0-9]+$/;

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/** Sends `path` (relative to `webDir`; '' is index.html) with the console's headers. */
export async function sendAsset(reply: FastifyReply, webDir: string, path: string): Promise<FastifyReply> {
  const rel = path === '' ? 'index.html' : path;
  const type = TYPES[extname(rel)];
  if (!ASSET_PATH.test(rel) || rel.split('/').some((s) => s === '..') || !type)
    throw new NotFoundError('web console file', rel);
  const f = await openRegular(join(webDir, rel));
  if (!f) {
    const index = await openRegular(join(webDir, 'index.html')).catch(() => undefined);
    await index?.fh.close();
    if (!index)
      throw new UnavailableError(
        `the web console is not built: ${join(webDir, 'index.html')} is missing (run npm run build)`,
      );
    throw new NotFoundError('web console file', rel);
  }
  try {
    if (f.st.size > ASSET_MAX_BYTES) throw new NotFoundError('web console file', rel);
    const body = await f.fh.readFile();
    securityHeaders(reply);
    return reply
      .header('content-type', type)
      .header('cache-control', HASHED.test(rel) ? 'public, max-age=31536000, immutable' : 'no-cache')
      .send(body);
  } finally {
    await f.fh.close();
  }
}
