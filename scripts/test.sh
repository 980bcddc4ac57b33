#!/usr/bin/env bash
# The full test suite: types, lint, then unit and integration tests (root, namespaces, real QEMU guests).
# It builds dist/ first: the tests that drive the CLI, the controller and the lab's agents run the compiled code.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc --noEmit
# The web console (web/) has DOM types of its own: a second project.
npx tsc -p web --noEmit
npm run build
npx biome check .
if [ "$(id -u)" != 0 ]; then
  npx vitest run --project unit
  echo "integration tests need root (namespaces, bridges, nftables, QEMU); run as root" >&2
  exit 1
fi
# The unit tests run as one more job of the integration runner, beside the integration files (scripts/test-integration.sh).
VMLINK_UNIT_IN_LIGHT_LANE=1 bash scripts/test-integration.sh
