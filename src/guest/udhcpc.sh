#!/bin/sh
# udhcpc event script of the vmlink test guest (guest content). busybox udhcpc sets $interface, $ip,
# $mask (prefix length), $router, $dns, $domain, $mtu.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound | renew)
    [ "$1" = bound ] && ip -4 addr flush dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    ip addr replace "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      while ip route del default dev "$interface" 2>/dev/null; do :; done
      # A default route per NIC, the metric ordered by ifindex: a probe bound to a NIC leaves by its own gateway.
      metric=$((100 + $(cat "/sys/class/net/$interface/ifindex")))
      for r in $router; do
        ip route add default via "$r" dev "$interface" metric "$metric"
        break
      done
    fi
    if [ -n "$dns" ]; then
      {
        [ -n "$domain" ] && echo "search $domain"
        for s in $dns; do echo "nameserver $s"; done
      } >/etc/resolv.conf
    fi
    echo "vmlink-guest: $interface dhcp $ip/${mask:-24}${router:+ via $router}" >/dev/console
    ;;
esac
exit 0
