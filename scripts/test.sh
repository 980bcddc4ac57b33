#!/usr/bin/env bash
# The full test suite: types, lint, unit and integration tests (root, namespaces, real QEMU guests).
# It builds dist/ first: the tests that drive the CLI, the controller and the lab's agents run the compiled code.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build
if [ "$(id -u)" != 0 ]; then
  bash scripts/static-checks.sh
  npx vitest run --project unit
  echo "integration tests need root (namespaces, bridges, nftables, QEMU); run as root" >&2
  exit 1
fi
# The static checks (scripts/static-checks.sh) and the unit tests run as jobs of the integration runner
# (scripts/test-integration.sh), the checks first, beside the first guest-booting file, which waits for no one: the
# guest files are the run's critical path. Failed checks stop the run.
VMLINK_UNIT_IN_LIGHT_LANE=1 bash scripts/test-integration.sh
