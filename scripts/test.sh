#!/usr/bin/env bash
# The full test suite: types, lint, unit tests, then integration tests (root, namespaces, real QEMU guests).
# It builds dist/ first: the tests that drive the CLI, the controller and the lab's agents run the compiled code.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc --noEmit
npm run build
npx biome check .
npx vitest run --project unit
if [ "$(id -u)" != 0 ]; then
  echo "integration tests need root (namespaces, bridges, nftables, QEMU); run as root" >&2
  exit 1
fi
bash scripts/test-integration.sh
