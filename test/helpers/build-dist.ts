// Vitest global setup: the tests that run the real `vmlink` (bin/vmlink.js) run the compiled dist/, so dist/ is
// rebuilt first when any source is newer than it; a stale build would test yesterday's code.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BUILD = fileURLToPath(new URL('../../scripts/build.mjs', import.meta.url));

/** Builds dist/ when it is missing or older than src/ (a no-op taking a few ms otherwise). */
export default function setup(): void {
  execFileSync(process.execPath, [BUILD, '--if-stale'], { stdio: 'inherit' });
}
