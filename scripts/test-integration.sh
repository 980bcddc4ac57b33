#!/usr/bin/env bash
# The integration tests (root): test/helpers/int-run.ts runs each test file in a vitest process of its own on two
# workers, longest first by test/integration/durations.json: one guest-booting file at a time (the VM lock), beside
# it light files (vitest.config.ts's LIGHT list) and, with VMLINK_UNIT_IN_LIGHT_LANE=1 (scripts/test.sh), the static
# checks (scripts/static-checks.sh, first) and the unit tests. Each file's output comes in one block when it ends,
# then a summary with each file's time. Arguments: file filters, --dry-run (the plan on paper), --record (write the
# measured durations back).
# VMLINK_INT_WORKERS (2), VMLINK_VM_SLOTS (1) and VMLINK_INT_LIGHT (2) change the parallelism (more than two files at
# once overloads a 2-core machine: see int-run.ts); VMLINK_INT_WORKERS=1 runs one file at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
# Built once here, so that each file's stale-build check finds nothing to do (builds at once would race).
node scripts/build.mjs --if-stale
exec npx tsx test/helpers/int-run.ts "$@"
