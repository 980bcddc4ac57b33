#!/usr/bin/env bash
# Builds vmlink's native helper: build/vmlink-launch (starts QEMU unprivileged with its taps open).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
cc -O2 -Wall -Wextra -o build/vmlink-launch native/vmlink-launch.c
# Only root runs it; nobody else may replace or run it.
chmod 0750 build/vmlink-launch
echo "built build/vmlink-launch"
