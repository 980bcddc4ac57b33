#!/usr/bin/env bash
# One command from a fresh clone to a running, verified lab: setup, controller, lab, apply, verify.
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=examples/quickstart.yaml
vmlink() { node bin/vmlink.js "$@"; }

bash scripts/setup.sh

printf '\n==> starting the controller\n'
vmlink daemon --detach

printf '\n==> building the lab (network namespaces: host1, a LAN with pc1, a router, an upstream machine)\n'
vmlink lab up -f "$SPEC"

printf '\n==> applying %s\n' "$SPEC"
vmlink apply -f "$SPEC"

printf '\n==> measuring the connectivity matrix\n'
status=0
vmlink verify || status=$?

cat <<EOT

The lab is still running. Try:
  npx vmlink status
  npx vmlink vm list
  npx vmlink vm exec web1 -- ip addr
  npx vmlink apply -f $SPEC        # again: no changes
Remove everything it made:
  npx vmlink lab down -f $SPEC && npx vmlink daemon --stop
EOT
exit $status
