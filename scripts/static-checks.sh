#!/usr/bin/env bash
# The static checks: types (the CLI/controller/agent project and the web console's, which has DOM types of its own)
# and lint. scripts/test.sh runs them first, beside the first guest-booting test file (test/helpers/int-run.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc --noEmit
npx tsc -p web --noEmit
npx biome check .
