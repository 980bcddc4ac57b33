/*
 * Attaching to a persistent tap device that the network driver created (shared by vmlink-launch and
 * vmlink-qmp-fd). Only root may open /dev/net/tun on vmlink hosts; QEMU runs unprivileged and gets the descriptor.
 */
#ifndef VMLINK_TAP_H
#define VMLINK_TAP_H

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/*
 * Opens /dev/net/tun and attaches it to the existing persistent tap NAME with a virtio-net header.
 * Returns the descriptor (O_CLOEXEC), or -1 with a message in err.
 */
static int open_tap(const char *name, char *err, size_t errlen) {
  struct ifreq ifr;
  if (strlen(name) >= IFNAMSIZ) {
    snprintf(err, errlen, "tap name too long (max %d): %s", IFNAMSIZ - 1, name);
    return -1;
  }
  /* TUNSETIFF would silently create a missing tap: insist on the network driver's persistent one. */
  if (if_nametoindex(name) == 0) {
    snprintf(err, errlen, "tap %s does not exist in this network namespace", name);
    return -1;
  }
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "cannot open /dev/net/tun: %s", strerror(errno));
    return -1;
  }
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    snprintf(err, errlen,
             "cannot attach to tap %s: %s (does it exist as a persistent tap with vnet_hdr in this network namespace?)",
             name, strerror(errno));
    close(fd);
    return -1;
  }
  if (strcmp(ifr.ifr_name, name) != 0) {
    snprintf(err, errlen, "kernel attached tap %s instead of %s", ifr.ifr_name, name);
    close(fd);
    return -1;
  }
  if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
    snprintf(err, errlen, "TUNGETIFF %s: %s", name, strerror(errno));
    close(fd);
    return -1;
  }
  if (!(ifr.ifr_flags & IFF_PERSIST)) {
    snprintf(err, errlen, "%s is not a persistent tap (create it with ip tuntap add)", name);
    close(fd);
    return -1;
  }
  return fd;
}

#endif
