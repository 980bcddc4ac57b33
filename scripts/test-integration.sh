#!/usr/bin/env bash
# The integration tests (root): the two lanes of vitest.config.ts side by side, each one file at a time, in two vitest
# processes (one process runs all its projects' files through one pool, one at a time). The light lane's lines are
# prefixed with [light]; both lanes must pass. With VMLINK_UNIT_IN_LIGHT_LANE=1 (scripts/test.sh) the unit tests run
# first in the light lane: the guests' lane is the longer one, and the light lane's files mostly wait on daemons.
set -euo pipefail
cd "$(dirname "$0")/.."
# Built once here, so that the lanes' own stale-build checks find nothing to do (two builds at once would race).
node scripts/build.mjs --if-stale
set +e
light_lane() {
  local rc=0
  if [ "${VMLINK_UNIT_IN_LIGHT_LANE:-}" = 1 ]; then npx vitest run --project unit || rc=$?; fi
  npx vitest run --project integration-light --passWithNoTests "$@" || rc=$?
  return "$rc"
}
(set -o pipefail; light_lane "$@" 2>&1 | sed -u 's/^/[light] /') &
light=$!
npx vitest run --project integration --passWithNoTests "$@"
guests=$?
wait "$light"
light_rc=$?
set -e
if [ "$guests" != 0 ] || [ "$light_rc" != 0 ]; then
  echo "integration tests failed (guests lane: exit $guests, light lane (unit tests too under npm test): exit $light_rc)" >&2
  exit 1
fi
