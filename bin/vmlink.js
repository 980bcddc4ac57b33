#!/usr/bin/env node
// Entry point of every vmlink process (CLI, controller, agents, lab relay): runs the compiled composition root in
// dist/ (`npm run build`; setup builds it). Without a build it stops and says so rather than falling back to tsx:
// a silent fallback would make every command 2-4x slower (tsx compiles at start) and hide a missing or failed
// build from setup and CI.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/main.js', import.meta.url);
if (!existsSync(main)) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  process.stderr.write(
    `error: vmlink is not built (no ${fileURLToPath(main)}): run \`npm run build\` in ${root}\n`,
  );
  process.exit(1);
}
await import(main.href);
