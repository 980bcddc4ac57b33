#!/usr/bin/env bash
# One command from a fresh clone to a running, verified lab: setup, controller, lab, apply, verify.
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=examples/quickstart.yaml

bash scripts/setup.sh

# Setup builds vmlink and links the `vmlink` command onto the PATH; this runs that command, as a user would,
# unless the PATH leads to another vmlink (then this checkout's, by path).
if [ "$(readlink -f "$(command -v vmlink || true)")" != "$(readlink -f bin/vmlink.js)" ]; then
  echo "note: \`vmlink\` on the PATH is not this checkout's; running node bin/vmlink.js" >&2
  vmlink() { node bin/vmlink.js "$@"; }
fi

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
  vmlink status
  vmlink vm list
  vmlink vm exec web1 -- ip addr
  vmlink apply -f $SPEC        # again: no changes
Remove everything it made:
  vmlink lab down -f $SPEC && vmlink daemon --stop
EOT
exit $status
