#!/bin/sh
# /init of the vmlink test guest (busybox sh, PID 1). Guest content: shipped inside the initramfs.
# Kernel command line:
#   vmlink.hostname=NAME                      hostname (default vmlink-guest)
#   vmlink.ip.<if>=ADDR/PREFIX[,GATEWAY]      static IPv4 address; otherwise DHCP (udhcpc) on that NIC
#   vmlink.mtu.<if>=N                         MTU of that NIC
#   vmlink.dhcp=0                             no DHCP on NICs without a static address
# NICs plugged in later are configured within a second: static from /run/vmlink/nic/<mac> (ADDR/PREFIX[,GATEWAY],
# written by the host through the guest agent), else DHCP.
# Tools beyond busybox: iputils ping (/bin/ping: `ping -M do -s N` for path-MTU checks), iperf3 (a server is
# started on demand through guest-exec: `iperf3 -s -1 -D`), and the 8021q module for VLAN sub-interfaces.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
ln -sfn /run /var/run
exec </dev/console >/dev/console 2>&1

say() { echo "vmlink-guest: $*"; }

# Value of kernel parameter $1 (last occurrence wins); fails when absent.
param() {
  _v=
  _found=1
  for _w in $(cat /proc/cmdline); do
    case "$_w" in "$1="*) _v="${_w#*=}"; _found=0 ;; esac
  done
  [ "$_found" = 0 ] && echo "$_v"
}

while read -r m; do
  [ -n "$m" ] && insmod "/lib/modules/$m" 2>/dev/null
done </etc/vmlink/modules

HOST=$(param vmlink.hostname) || HOST=vmlink-guest
hostname "$HOST"
echo "$HOST" >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$HOST" >/etc/hosts
: >/etc/resolv.conf

# Graceful power-off: stop services, flush, power off (ACPI power button, qemu-ga guest-shutdown, poweroff).
shutdown_now() {
  say "shutting down ($1)"
  kill $(pidof qemu-ga httpd udhcpc) 2>/dev/null
  sync
  case "$1" in
    reboot) reboot -f ;;
    halt) halt -f ;;
    *) poweroff -f ;;
  esac
}
# busybox poweroff/reboot/halt (without -f) signal PID 1: USR2/TERM/USR1.
trap 'shutdown_now poweroff' USR2
trap 'shutdown_now reboot' TERM
trap 'shutdown_now halt' USR1

ip link set lo up
# virtio-net probes synchronously when its module loads; give late devices a moment anyway.
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done

DHCP=$(param vmlink.dhcp) || DHCP=1
mkdir -p /run/vmlink/nic /run/vmlink/up

# Configures NIC $1. At boot ($2 = boot) the kernel command line says its MTU and static address by name; a NIC
# plugged later is named by the kernel in the order it appears, so the host puts its static address, if any, in
# /run/vmlink/nic/<mac> (over the guest agent) before it plugs it in. Otherwise: DHCP.
configure_nic() {
  n=$1
  : >"/run/vmlink/up/$n"
  cfg=
  if [ "$2" = boot ]; then
    mtu=$(param "vmlink.mtu.$n") && ip link set "$n" mtu "$mtu"
    cfg=$(param "vmlink.ip.$n")
  else
    mac=$(cat "/sys/class/net/$n/address" 2>/dev/null)
    [ -n "$mac" ] && [ -f "/run/vmlink/nic/$mac" ] && cfg=$(cat "/run/vmlink/nic/$mac")
  fi
  ip link set "$n" up
  if [ -n "$cfg" ]; then
    addr=${cfg%%,*}
    ip addr add "$addr" dev "$n"
    # Same per-NIC metric as udhcpc.script: every NIC with a gateway keeps its own default route.
    case "$cfg" in *,*) ip route add default via "${cfg#*,}" dev "$n" metric $((100 + $(cat "/sys/class/net/$n/ifindex"))) ;; esac
    say "$n static $cfg"
  elif [ "$DHCP" != 0 ]; then
    # Backgrounded so that a NIC without a DHCP server does not delay the guest; -b keeps retrying.
    udhcpc -i "$n" -b -p "/run/udhcpc.$n.pid" -s /etc/udhcpc.script -x "hostname:$HOST" -t 3 -T 1 -A 3 \
      >/dev/null 2>&1 &
    say "$n dhcp"
  fi
}

for d in /sys/class/net/*; do
  n=${d##*/}
  [ "$n" = lo ] && continue
  configure_nic "$n" boot
done

# NIC hot-plug (udev is absent): configure NICs that appear, forget those that go (their DHCP client too). Only
# devices of the machine (with a `device` link: a plugged virtio NIC); a VLAN or bridge the guest's own user makes
# is theirs to configure, and a DHCP client started on it would flush the address they gave it.
(while :; do
  sleep 1
  for d in /sys/class/net/*; do
    n=${d##*/}
    [ "$n" = lo ] || [ -e "/run/vmlink/up/$n" ] || [ ! -e "$d/device" ] || configure_nic "$n" hotplug
  done
  for u in /run/vmlink/up/*; do
    n=${u##*/}
    [ -e "$u" ] && [ ! -e "/sys/class/net/$n" ] || continue
    [ -f "/run/udhcpc.$n.pid" ] && kill "$(cat "/run/udhcpc.$n.pid")" 2>/dev/null
    rm -f "$u" "/run/udhcpc.$n.pid"
    say "$n unplugged"
  done
done) &

# udev is absent: create /dev/virtio-ports/NAME links ourselves. Ports appear asynchronously.
link_ports() {
  mkdir -p /dev/virtio-ports
  for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] || continue
    name=$(cat "$p/name")
    [ -n "$name" ] && ln -sfn "../${p##*/}" "/dev/virtio-ports/$name"
  done
}
QGA=/dev/virtio-ports/org.qemu.guest_agent.0
i=0
while :; do
  link_ports
  [ -e "$QGA" ] || [ $i -ge 30 ] && break
  sleep 0.1
  i=$((i + 1))
done
if [ -e "$QGA" ]; then
  mkdir -p /run/qemu-ga
  (while :; do
    qemu-ga -m virtio-serial -p "$QGA" -f /run/qemu-ga.pid -t /run/qemu-ga -l /run/qemu-ga.log
    sleep 1
  done) &
  say "qemu-ga on $QGA"
else
  say "no guest agent port"
fi

mkdir -p /www
echo "vmlink-guest $HOST" >/www/index.html
httpd -p 80 -h /www

# ACPI power button (QEMU system_powerdown): the button driver reports KEY_POWER on an input device.
for inp in /sys/class/input/input*; do
  [ "$(cat "$inp/name" 2>/dev/null)" = "Power Button" ] || continue
  for ev in "$inp"/event*; do
    [ -e "$ev" ] || continue
    (head -c 1 "/dev/input/${ev##*/}" >/dev/null && kill -USR2 1) &
  done
done

echo "vmlink-guest ready" >/dev/console

while :; do
  sleep 3600 &
  wait $!
done
