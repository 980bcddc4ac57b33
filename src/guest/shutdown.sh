#!/bin/sh
# /sbin/shutdown of the vmlink test guest (guest content): qemu-ga's guest-shutdown runs
# `shutdown -P|-H|-r +0 MSG`; busybox has no shutdown applet, so signal init like busybox poweroff does.
sig=USR2
for a in "$@"; do
  case "$a" in
    -r) sig=TERM ;;
    -H) sig=USR1 ;;
    -P | -h) sig=USR2 ;;
  esac
done
kill -"$sig" 1
