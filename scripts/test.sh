#!/usr/bin/env bash
# The full test suite: types, lint, unit tests, then integration tests (root, namespaces, real QEMU guests).
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc --noEmit
npx biome check .
npx vitest run --project unit
if [ "$(id -u)" != 0 ]; then
  echo "integration tests need root (namespaces, bridges, nftables, QEMU); run as root" >&2
  exit 1
fi
npx vitest run --project integration
