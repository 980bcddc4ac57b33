// The web console's bundle (web/ -> dist/web/), called by build.mjs: esbuild bundles web/src/main.ts with xterm.js
// and the CSS it imports into content-hashed files under dist/web/assets/ (served immutable at /ui/assets/), and
// index.html is written naming them. Everything comes from web/ and node_modules: nothing is fetched.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { buildSync } from 'esbuild';

/** Builds `<root>/web` into `<dist>/web`, replacing what was there. Throws with esbuild's errors. */
export function buildWeb(root, dist) {
  const out = join(dist, 'web');
  const assets = join(out, 'assets');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(assets, { recursive: true });
  const r = buildSync({
    entryPoints: { app: join(root, 'web', 'src', 'main.ts') },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome110', 'firefox110', 'safari16'],
    minify: true,
    sourcemap: false,
    legalComments: 'linked',
    entryNames: '[name]-[hash]',
    outdir: assets,
    metafile: true,
    logLevel: 'warning',
    // Fonts or images imported by CSS would be bundled as files beside the others (xterm's CSS imports none).
    loader: { '.woff2': 'file', '.woff': 'file', '.png': 'file', '.svg': 'file' },
  });
  const outputs = Object.keys(r.metafile.outputs).map((f) => basename(f));
  const js = outputs.find((f) => /^app-[A-Z0-9]+\.js$/i.test(f));
  const css = outputs.find((f) => /^app-[A-Z0-9]+\.css$/i.test(f));
  if (!js || !css) throw new Error(`web bundle: expected app-<hash>.js and .css, got ${outputs.join(', ')}`);
  const html = readFileSync(join(root, 'web', 'index.html'), 'utf8')
    .replace('__JS__', js)
    .replace('__CSS__', css);
  writeFileSync(join(out, 'index.html'), html);
  return { js, css };
}
