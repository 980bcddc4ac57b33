// `npm run build`: compiles src/ to dist/ (tsc -p tsconfig.build.json) and copies the non-TypeScript files src/
// reads at run time (the guest's shell scripts) beside their modules, so dist/ mirrors src/; then bundles the web
// console (web/ -> dist/web/, build-web.mjs).
// `--if-stale` builds only when an input is newer than the last build (setup, `npm test` and the test runs use it).
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildWeb } from './build-web.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src');
const web = join(root, 'web');
const dist = join(root, 'dist');
/** Written after a successful build; its mtime is the build's time (tsc may leave its own files untouched). */
const stamp = join(dist, '.built');
/** Inputs besides src/ whose change calls for a rebuild. */
const configs = ['tsconfig.json', 'tsconfig.build.json', 'package.json'].map((f) => join(root, f));

/** Every file under `dir`, recursively. */
function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)],
  );
}

/** A unit test's file (tests, their helpers, golden files): no part of dist/. */
const isTestFile = (f) => /\.test(-util)?\.ts$/.test(f) || relative(src, f).split('/').includes('__golden__');
/** A file src/ reads at run time: anything but TypeScript and test files. */
const isAsset = (f) => !f.endsWith('.ts') && !isTestFile(f);

/** Whether dist/ is missing or older than any source, asset or build setting. */
export function stale() {
  let built;
  try {
    built = statSync(stamp).mtimeMs;
  } catch {
    return true;
  }
  return [
    ...files(src).filter((f) => !isTestFile(f)),
    ...files(web).filter((f) => !isTestFile(f)),
    ...configs,
  ].some((f) => statSync(f).mtimeMs > built);
}

/** Compiles and copies the assets; throws with tsc's output when it fails. */
export function build() {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
  for (const f of files(src).filter(isAsset)) {
    const to = join(dist, relative(src, f));
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(f, to);
  }
  buildWeb(root, dist);
  writeFileSync(stamp, `${new Date().toISOString()}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const ifStale = process.argv.includes('--if-stale');
  if (!ifStale || stale()) {
    try {
      build();
    } catch {
      console.error('build failed: tsc or esbuild reported the errors above');
      process.exit(1);
    }
  }
}
