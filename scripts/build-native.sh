#!/usr/bin/env bash
# Builds vmlink's native helpers: build/vmlink-launch (starts QEMU unprivileged with its taps open) and
# build/vmlink-qmp-fd (passes a tap descriptor to a running QEMU over QMP, for NIC hot-plug).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
for tool in vmlink-launch vmlink-qmp-fd; do
  # -Wno-format-truncation: messages naming long paths are cut on purpose.
  cc -O2 -Wall -Wextra -Wno-format-truncation -o "build/$tool" "native/$tool.c"
  # Only root runs them; nobody else may replace or run them.
  chmod 0750 "build/$tool"
  echo "built build/$tool"
done
