#!/usr/bin/env bash
# Installs what vmlink needs on a Debian 12 machine, skipping what is already there:
# Debian packages, npm dependencies, the compiled vmlink (dist/) and its `vmlink` command on the PATH,
# the unprivileged QEMU user, the QEMU launcher and the test guest image.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "error: setup must run as root (it installs packages and creates the vmlink-qemu user)" >&2
  exit 1
fi

PACKAGES=(qemu-system-x86 qemu-utils dnsmasq-base nftables iproute2 busybox-static iputils-ping
  genisoimage cpio kmod xz-utils zstd gcc libc6-dev util-linux procps openvswitch-switch iperf3 tcpdump
  tgt nfs-ganesha nfs-ganesha-vfs qemu-block-extra rpcbind pci.ids etcd-server etcd-client
  e2fsprogs restic borgbackup faketime prometheus chromium haproxy keepalived)
# Backups (docs/backup.md): e2fsprogs' debugfs reads single files out of a restored ext4 disk without mounting it;
# restic and borgbackup are the reference points of bench/backup.ts and of the retention tests (restic forget).
# faketime (libfaketime): the doctor's clock-drift test restarts a lab agent with its clock ahead.
# prometheus (and its promtool): the metrics test scrapes a lab with a Prometheus server of its own and checks the page.
# chromium: the web console's tests drive it headless (playwright-core); haproxy and keepalived: load balancers.
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # vmlink's agents run their own Open vSwitch (and dnsmasq) per host namespace, and a lab storage machine its own
  # tgtd, rpcbind and nfs-ganesha: keep the packages' system-wide services from starting in this machine's own
  # namespace during the install.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" || { [ "$own_policy" = 1 ] && rm -f "$policy"; exit 1; }
  [ "$own_policy" = 1 ] && rm -f "$policy"
  if command -v systemctl >/dev/null 2>&1; then
    # A system rpcbind would hold /run/rpcbind.sock and port 111 here; a system tgtd the control socket numbers; a
    # system etcd ports 2379/2380 (the lab runs its own members in namespaces); a system Prometheus port 9090 (the
    # metrics test starts its own).
    # Only the services of packages this run installed: one the machine already ran stays as it was.
    declare -A units=([openvswitch-switch]="openvswitch-switch" [tgt]="tgt" [nfs-ganesha]="nfs-ganesha"
      [rpcbind]="rpcbind.socket rpcbind" [etcd-server]="etcd"
      [prometheus]="prometheus" [haproxy]="haproxy" [keepalived]="keepalived")
    for p in "${missing[@]}"; do
      for unit in ${units[$p]:-}; do systemctl disable --now "$unit" >/dev/null 2>&1 || true; done
    done
  fi
else
  step "Debian packages: all present"
fi

# npm dependencies. Their native addons (package.json's allowScripts: better-sqlite3, zstd-napi) compile from source
# here (no prebuilt binaries without GitHub): ~2 minutes of gcc that npm runs one package after the other. Each
# builds in the background (its own install script, in its own directory) while the test guest image and vmlink
# build; their status is checked at the end. The marker says the last install completed with them.
scripts_done=node_modules/.vmlink-scripts-done
addons=()
addon_pids=()
guest_pid=
logs=$(mktemp -d)
trap 'kill ${addon_pids[*]} $guest_pid 2>/dev/null || true; rm -rf "$logs"' EXIT
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ ! -e "$scripts_done" ]; then
  step "installing npm dependencies (npm ci; native addons build in the background)"
  npm ci --no-audit --no-fund --ignore-scripts
  # esbuild's own check first (tsx uses it at once); then each allowed package's install script.
  npm rebuild --no-audit --no-fund esbuild
  mapfile -t addons < <(node -p "Object.keys(require('./package.json').allowScripts ?? {}).filter((n) => n !== 'esbuild').join('\\n')")
  for a in "${addons[@]}"; do
    (cd "node_modules/$a" && npm run install --no-audit --no-fund) >"$logs/$a.log" 2>&1 &
    addon_pids+=($!)
  done
else
  step "npm dependencies: up to date"
fi

# The test guest image (tsx from src/, no dist/ needed) is mostly downloads: built in the background while the build
# and the native helpers use the CPU; its output is shown, and its status checked, at the end.
guest_log=$logs/guest.log
npx tsx src/guest/main.ts >"$guest_log" 2>&1 &
guest_pid=$!

step "building vmlink (dist/, when older than src/)"
node scripts/build.mjs --if-stale

# The `vmlink` command, as `npm link` would put it on the PATH, but in /usr/local/bin: npm's global prefix is /usr
# with Debian's npm (dpkg's directory), and `npm link` also reinstalls the package into npm's global tree.
# VMLINK_BIN_DIR picks another directory. A link to another checkout is replaced: the last setup run wins.
bin_dir=${VMLINK_BIN_DIR:-/usr/local/bin}
link="$bin_dir/vmlink"
target="$PWD/bin/vmlink.js"
if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
  step "vmlink command: $link -> $target"
elif [ -e "$link" ] && [ ! -L "$link" ]; then
  echo "warning: $link exists and is not a link; left alone (run this checkout as node $target)" >&2
else
  step "linking the vmlink command: $link -> $target"
  mkdir -p "$bin_dir"
  ln -sfn "$target" "$link"
fi
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "warning: $bin_dir is not on PATH; add it to run vmlink by name" >&2 ;;
esac

if ! id -u vmlink-qemu >/dev/null 2>&1; then
  step "creating the unprivileged QEMU user vmlink-qemu"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vmlink-qemu
fi

# Each VM's QEMU runs jailed under its own numeric uid/gid from 1879048192 (0x70000000) up, which needs no account;
# ids /etc/passwd or /etc/group use are skipped. vmlink-qemu remains for the accelerator probe, and its group may
# read shared base images. Stock Debian gives /dev/kvm to group kvm (0660): the probe user and every VM join it.
# Without /dev/kvm (or the group) the accelerator probe falls back to TCG and says why.
if awk -F: '$3 >= 1879048192 && $3 < 1879113728 { found = 1 } END { exit !found }' /etc/passwd /etc/group; then
  echo "warning: accounts in /etc/passwd or /etc/group use ids from vmlink's VM range 1879048192..1879113727 (skipped)" >&2
fi
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
  if id -nG vmlink-qemu | tr ' ' '\n' | grep -qx kvm; then
    step "vmlink-qemu: already in group kvm"
  else
    step "adding vmlink-qemu to group kvm (for /dev/kvm)"
    usermod -a -G kvm vmlink-qemu
  fi
fi

# The launcher and the NIC hot-plug helper; rebuilt when missing or older than any native source.
stale=0
for tool in vmlink-launch vmlink-qmp-fd; do
  if [ ! -x "build/$tool" ] || [ -n "$(find native -newer "build/$tool" -print -quit)" ]; then stale=1; fi
done
if [ "$stale" = 1 ]; then
  step "building the QEMU launcher and NIC hot-plug helper"
  bash scripts/build-native.sh
fi

if [ ${#addon_pids[@]} -gt 0 ]; then
  step "npm native addons: ${addons[*]}"
  for i in "${!addons[@]}"; do
    status=0
    wait "${addon_pids[$i]}" || status=$?
    if [ "$status" != 0 ]; then
      cat "$logs/${addons[$i]}.log"
      echo "error: building the npm package ${addons[$i]} failed (exit $status)" >&2
      exit "$status"
    fi
  done
  addon_pids=()
  touch "$scripts_done"
fi

step "test guest image (Debian kernel + busybox + qemu-guest-agent)"
guest_status=0
wait "$guest_pid" || guest_status=$?
guest_pid=
cat "$guest_log"
if [ "$guest_status" != 0 ]; then
  echo "error: building the test guest image failed (exit $guest_status)" >&2
  exit "$guest_status"
fi

step "setup complete"
